package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
)

// Probe asks the health endpoint a running ferry serves on addr (its
// metrics_addr, host:port) whether it is healthy, as a container's health
// check or a load balancer would. It returns the endpoint's "ok" when the
// answer is 200, and otherwise an error saying why (connection refused,
// or the status and the reasons the endpoint gave, on one line). A host
// left empty (":9464") is this host.
func Probe(ctx context.Context, addr string) (string, error) {
	url := "http://" + addr + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("health check of %q: %w", addr, err)
	}
	// Direct, whatever HTTP_PROXY says: the endpoint is local to the host
	// or its pod.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the "Get URL" it repeats
		}
		return "", fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.Join(strings.Fields(string(body)), " ")
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, text)
	}
	return text, nil
}
