package config

// The time zone database is embedded so time_zone and CRON_TZ= work on
// machines and images without /usr/share/zoneinfo (a static binary on a
// distroless or scratch image).
import _ "time/tzdata"
