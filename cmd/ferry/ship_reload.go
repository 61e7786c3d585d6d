package main

import (
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/retention"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/transport/tcp"
)

// applyShipReload applies a reload's live keys (changed) to a running
// shipper, each where it is held: the flush policy and spool limit in the
// spool, flush_at and the windows in the shipper (at once; a segment in
// flight finishes), [retention] in the prune scheduler (its next run),
// [tcp] bandwidth_limit in the tcp:// links that have no limit of their
// own in [[ship.targets]] (from their next chunk), health_max_lag in the
// health checks. It parses everything before it sets anything, so a
// reload applies whole or not at all. Each area changed gets a log line.
func applyShipReload(next *config.File, changed []string, sh *shipper.Shipper, targets []shipper.Target,
	pruner *retention.Scheduler, reg *metrics.Registry, log *slog.Logger) error {
	changedAny := func(keys ...string) bool {
		return slices.ContainsFunc(changed, func(k string) bool { return slices.Contains(keys, k) })
	}
	var (
		schedules shipper.Schedules
		rule      retention.Rule
		err       error
	)
	if changedAny("ship.flush_at", "ship.windows", "time_zone") {
		if schedules, err = shipSchedules(next); err != nil {
			return err
		}
	}
	if changedAny("retention.keep_for", "retention.keep_min", "retention.schedule", "time_zone") {
		if rule, err = retentionRule(next); err != nil {
			return err
		}
	}

	n := next.Ship
	sh.Spool().SetLimits(batch.FlushPolicy{MaxBytes: int64(n.MaxBytes), MaxRecords: int(n.MaxRecords), MaxAge: time.Duration(n.MaxAge)},
		int64(n.SpoolLimit))
	if changedAny("ship.flush_at", "ship.windows", "time_zone") {
		sh.SetSchedules(schedules)
		ws := sh.Window()
		specs := make([]string, len(next.Ship.Windows))
		for i, w := range next.Ship.Windows {
			specs[i] = w.Start + " for " + time.Duration(w.Duration).String()
			if w.BandwidthLimit > 0 {
				specs[i] += " at " + sizeString(int64(w.BandwidthLimit)) + "/s"
			}
		}
		log.Info("reload: schedules applied (a segment being sent finishes under the old ones)",
			"flush_at", next.Ship.FlushAt, "windows", strings.Join(specs, "; "), "window_open", ws.Open || !ws.Restricted)
	}
	if changedAny("retention.keep_for", "retention.keep_min", "retention.schedule", "time_zone") {
		pruner.Set(rule)
		log.Info("reload: retention applied from its next scheduled prune", "schedule", next.Retention.Schedule,
			"keep_for", time.Duration(next.Retention.KeepFor), "keep_min", next.Retention.KeepMin)
	}
	if changedAny("tcp.bandwidth_limit") {
		var names []string
		for _, t := range targets {
			cl, ok := t.Store.(*tcp.Client)
			if !ok || ownBandwidthLimit(next, t.Name) {
				continue
			}
			cl.SetBandwidthLimit(int64(next.TCP.BandwidthLimit))
			names = append(names, t.Name)
		}
		log.Info("reload: tcp.bandwidth_limit applied from the next chunk sent", "bytes_per_second", int64(next.TCP.BandwidthLimit),
			"targets", strings.Join(names, ","))
	}
	return applyHealthReload(next, changed, reg, log)
}

// applyHealthReload applies health_max_lag to the health checks of reg
// (nil: no metrics_addr, nothing checks it).
func applyHealthReload(next *config.File, changed []string, reg *metrics.Registry, log *slog.Logger) error {
	if !slices.Contains(changed, "health_max_lag") {
		return nil
	}
	if reg != nil {
		reg.SetHealth(metrics.Health{MaxLag: time.Duration(next.HealthMaxLag)})
	}
	log.Info("reload: health_max_lag applied from the next health check", "health_max_lag", time.Duration(next.HealthMaxLag))
	return nil
}

// ownBandwidthLimit reports whether the [[ship.targets]] entry of the
// target named name sets its own bandwidth_limit (over [tcp]'s).
func ownBandwidthLimit(cfg *config.File, name string) bool {
	for _, t := range cfg.Ship.Targets {
		if (t.Name == name || (t.Name == "" && t.Store == name)) && t.BandwidthLimit != 0 {
			return true
		}
	}
	return false
}
