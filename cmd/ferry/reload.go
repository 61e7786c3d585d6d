package main

import (
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
)

// reloader re-reads the config file on SIGHUP (config.Reloadable): a
// reload whose changed keys are all live is handed to apply and logged
// with the keys; one that changes any other key, or a file that does not
// load, is refused with a log line and the process keeps its config.
// SIGHUP never stops the process.
type reloader struct {
	c    *common
	verb string
	log  *slog.Logger

	mu    sync.Mutex
	cur   *config.File
	apply func(next *config.File, changed []string) error // nil: only the log level is applied
	stop  chan struct{}
	done  chan struct{}
}

// watchReload starts handling SIGHUP for verb. Call stop when done.
func (c *common) watchReload(verb string, log *slog.Logger) *reloader {
	r := &reloader{c: c, verb: verb, log: log, cur: c.cfg, stop: make(chan struct{}), done: make(chan struct{})}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer close(r.done)
		defer signal.Stop(ch)
		for {
			select {
			case <-r.stop:
				return
			case <-ch:
				r.reload()
			}
		}
	}()
	return r
}

// onApply sets what applies a reload's live keys besides the log level:
// f is given the new config and the live keys that changed, and applies
// them all or, returning an error, none (the reload is then refused).
func (r *reloader) onApply(f func(next *config.File, changed []string) error) {
	r.mu.Lock()
	r.apply = f
	r.mu.Unlock()
}

func (r *reloader) close() {
	close(r.stop)
	<-r.done
}

func (r *reloader) reload() {
	defer notifyReloading(r.log)()
	path := r.c.configPath
	if path == "" {
		r.log.Warn("SIGHUP: no config file to reload (--config not given); nothing changed")
		return
	}
	next, err := r.c.reloadConfig(r.verb)
	if err != nil {
		r.log.Error("config reload refused: keeping the running config", "file", path, "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	live, refused := config.Reloadable(r.verb, r.cur, next)
	if len(refused) > 0 {
		r.log.Error("config reload refused: restart to change "+strings.Join(refused, ", ")+"; keeping the running config",
			"file", path, "keys", strings.Join(refused, ","), "live_keys", strings.Join(config.LiveKeys(r.verb), ","))
		return
	}
	if len(live) == 0 {
		r.log.Info("config reloaded: nothing changed", "file", path)
		return
	}
	if r.apply != nil {
		if err := r.apply(next, live); err != nil {
			r.log.Error("config reload refused: keeping the running config", "file", path, "err", err)
			return
		}
	}
	r.c.level.Set(levelOf(next.LogLevel))
	r.cur = next
	r.log.Info("config reloaded", "file", path, "changed", strings.Join(live, ","))
}

// reloadConfig loads the config file again with the FERRY_* settings of
// the start (the variables are gone from the environment by now) and
// applies the command-line flags of this run over it, as parse did; the
// link token resolved at start is kept.
func (c *common) reloadConfig(verb string) (*config.File, error) {
	next, err := config.LoadEnv(c.configPath, c.env)
	if err != nil {
		return nil, err
	}
	running := c.cfg
	c.cfg = next // applyFlag sets c.cfg; only this goroutine reads it after the start
	var ferr error
	c.fs.Visit(func(f *pflag.Flag) {
		if ferr == nil {
			ferr = c.applyFlag(f)
		}
	})
	c.cfg = running
	if ferr != nil {
		return nil, ferr
	}
	if next.TCP.Token == "" && next.TCP.TokenFile == running.TCP.TokenFile {
		next.TCP.Token, next.TCP.TokenSource = running.TCP.Token, running.TCP.TokenSource
	}
	if err := next.Validate(verb); err != nil {
		return nil, err
	}
	if verb != "ship" && next.Generation == 0 {
		next.Generation = 1
	}
	return next, nil
}
