package main

// The vocabulary. Lists drawn with skew are ordered most popular first.
// Placeholders in braces are filled by gen.expand.

var paths = []struct {
	method, path, query string
	size                int // typical response size in bytes
}{
	{"GET", "/api/v1/products/{id}", "?fields=price,stock", 1800},
	{"GET", "/", "", 14200},
	{"GET", "/static/js/app.{hex}.js", "", 182000},
	{"GET", "/api/v1/cart", "", 950},
	{"GET", "/healthz", "", 2},
	{"POST", "/api/v1/cart/items", "", 410},
	{"GET", "/api/v1/products", "?category={word}&page={n}&sort=price", 12400},
	{"GET", "/static/css/main.{hex}.css", "", 41000},
	{"GET", "/api/v1/users/{id}", "", 620},
	{"GET", "/images/products/{id}/thumb.webp", "", 9800},
	{"GET", "/api/v1/search", "?q={word}&limit=20", 8600},
	{"POST", "/api/v1/orders", "", 1300},
	{"GET", "/api/v1/orders/{id}", "", 2100},
	{"GET", "/metrics", "", 23000},
	{"PUT", "/api/v1/users/{id}/preferences", "", 180},
	{"GET", "/product/{word}-{id}", "?ref=home", 38000},
	{"POST", "/api/v1/auth/login", "", 350},
	{"POST", "/api/v1/auth/refresh", "", 340},
	{"DELETE", "/api/v1/cart/items/{sku}", "", 0},
	{"GET", "/api/v1/users/{id}/orders", "?status=open&page={n}", 5200},
	{"POST", "/api/v1/payments/{id}/capture", "", 700},
	{"GET", "/favicon.ico", "", 1150},
	{"GET", "/robots.txt", "", 68},
	{"POST", "/api/v2/events/batch", "", 40},
	{"GET", "/api/v1/inventory/{sku}", "?warehouse=eu-west-{n}", 300},
	{"GET", "/account/settings", "", 16500},
	{"PATCH", "/api/v1/orders/{id}", "", 1250},
	{"GET", "/wp-login.php", "", 150},
	{"GET", "/.env", "", 150},
}

// statuses is a weighted table: one entry per 1/200.
var statuses = func() []int {
	var s []int
	for _, w := range []struct{ code, n int }{
		{200, 158}, {201, 6}, {204, 4}, {301, 2}, {302, 3}, {304, 8},
		{400, 3}, {401, 3}, {403, 2}, {404, 6}, {429, 1}, {499, 1},
		{500, 1}, {502, 1}, {503, 1},
	} {
		for range w.n {
			s = append(s, w.code)
		}
	}
	return s
}()

var agents = []string{
	"okhttp/4.12.0",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
	"ShopApp/5.14.2 (iOS 17.3; iPhone15,2)",
	"kube-probe/1.29",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
	"Prometheus/2.50.1",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
	"ShopApp/5.13.0 (Android 14; Pixel 8)",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.164 Mobile Safari/537.36",
	"Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
	"curl/8.5.0",
	"Go-http-client/1.1",
	"python-requests/2.31.0",
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
	"Apache-HttpClient/4.5.14 (Java/17.0.10)",
}

var users = []string{"alice", "api-client", "bob", "svc-reports", "carol", "admin"}

var services = []string{
	"orders-api", "catalog", "cart", "auth", "billing", "search",
	"inventory", "notifier", "gateway", "recommender",
}

var messages = []struct{ level, msg, kv string }{
	{"INFO ", "request completed", "method=GET route=/api/v1/products/:id status=200 user_id={id}"},
	{"DEBUG", "cache hit", "key=product:{id} ttl_s={n}"},
	{"INFO ", "order created", "order_id={big} user_id={id} items={n} total={amt} currency=EUR"},
	{"DEBUG", "cache miss", "key=user:{id}:cart backend=redis-{n}"},
	{"DEBUG", "db query", "table=orders rows={n} query_id={hex}"},
	{"INFO ", "payment authorized", "provider=stripe payment_id=pi_{hex}{hex} amount={amt}"},
	{"WARN ", "slow query", "table=products rows={big} plan=seq_scan threshold_ms=250"},
	{"INFO ", "user logged in", "user_id={id} method=password mfa=true ip_country=DE"},
	{"WARN ", "retrying upstream", "upstream={host} attempt={n} error=\"context deadline exceeded\""},
	{"INFO ", "inventory reserved", "sku={sku} qty={n} warehouse=eu-west-1 reservation={hex}"},
	{"DEBUG", "feature flag evaluated", "flag=new-checkout-{word} user_id={id} variant=treatment"},
	{"INFO ", "email queued", "template=order_confirmation user_id={id} message_id=<{hex}@mail.example.com>"},
	{"WARN ", "rate limit exceeded", "client_id={hex} limit=100 window_s=60"},
	{"ERROR", "upstream returned error", "upstream={host} status=503 body_bytes={n}"},
	{"INFO ", "job finished", "job=reindex-{word} processed={big} failed={n}"},
}

var events = []struct{ name, payload string }{
	{"cart.updated", `"user_id":{id},"cart":{"items":[{"sku":"{sku}","qty":{n}},{"sku":"{sku}","qty":1}],"total":{amt}}`},
	{"page.viewed", `"user_id":{id},"page":"/product/{word}-{id}","referrer":"search","ab":{"checkout":"b"}`},
	{"order.placed", `"order_id":{big},"user_id":{id},"total":{amt},"currency":"EUR","shipping":{"method":"standard","country":"FR"}`},
	{"payment.captured", `"payment_id":"pi_{hex}{hex}","amount":{amt},"currency":"EUR","card":{"brand":"visa","last4":"{n}{n}"}`},
	{"search.performed", `"query":"{word} {word}","results":{n},"filters":{"in_stock":true,"max_price":{amt}}`},
	{"user.signed_up", `"user_id":{big},"plan":"free","source":"{word}","consent":{"marketing":false}`},
}

var exceptions = []struct{ class, msg, kv string }{
	{"java.lang.IllegalStateException", "order {big} is already in state SHIPPED", "order_id={big}"},
	{"org.springframework.dao.QueryTimeoutException", "query timed out after 30000ms on table orders", "query_id={hex}"},
	{"java.lang.NullPointerException", "Cannot invoke \"Customer.getAddress()\" because \"customer\" is null", "user_id={id}"},
	{"com.acme.payments.PaymentDeclinedException", "card declined: insufficient_funds (payment pi_{hex})", "amount={amt}"},
}

var frames = []struct {
	fn, file string
	line     int
}{
	{"com.acme.orders.OrderService.ship", "OrderService.java", 214},
	{"com.acme.orders.OrderService.lambda$ship$3", "OrderService.java", 198},
	{"com.acme.orders.repo.OrderRepository.updateState", "OrderRepository.java", 87},
	{"org.springframework.jdbc.core.JdbcTemplate.update", "JdbcTemplate.java", 977},
	{"org.springframework.transaction.support.TransactionTemplate.execute", "TransactionTemplate.java", 140},
	{"com.acme.orders.api.OrderController.patch", "OrderController.java", 66},
	{"jdk.internal.reflect.DirectMethodHandleAccessor.invoke", "DirectMethodHandleAccessor.java", 103},
	{"java.lang.reflect.Method.invoke", "Method.java", 580},
	{"org.springframework.web.method.support.InvocableHandlerMethod.doInvoke", "InvocableHandlerMethod.java", 255},
	{"org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle", "ServletInvocableHandlerMethod.java", 118},
	{"org.springframework.web.servlet.DispatcherServlet.doDispatch", "DispatcherServlet.java", 1089},
	{"org.springframework.web.servlet.FrameworkServlet.processRequest", "FrameworkServlet.java", 1011},
	{"jakarta.servlet.http.HttpServlet.service", "HttpServlet.java", 658},
	{"org.apache.catalina.core.ApplicationFilterChain.doFilter", "ApplicationFilterChain.java", 166},
	{"org.apache.catalina.core.StandardWrapperValve.invoke", "StandardWrapperValve.java", 167},
	{"org.apache.coyote.http11.Http11Processor.service", "Http11Processor.java", 391},
	{"org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun", "NioEndpoint.java", 1744},
	{"java.util.concurrent.ThreadPoolExecutor.runWorker", "ThreadPoolExecutor.java", 1144},
	{"java.lang.Thread.run", "Thread.java", 1583},
}

var words = []string{
	"shoes", "jacket", "coffee", "headphones", "laptop", "backpack", "socks",
	"kettle", "monitor", "keyboard", "lamp", "desk", "chair", "umbrella",
	"bottle", "camera", "tent", "blender", "watch", "scarf", "gloves",
	"charger", "sneakers", "mug", "pillow", "router", "drone", "speaker",
}
