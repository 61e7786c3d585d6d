package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// errHelp is returned by a verb asked for --help: the command layer
// (cli.go) prints the verb's help from the flag set it built, on stdout.
var errHelp = errors.New("help shown")

// common holds the flags every verb shares. Flags override the config file.
type common struct {
	fs         *pflag.FlagSet
	configPath string
	cfg        *config.File
	configFrom string                // where configPath came from (config.Locate); "" for no file
	accepted   map[string]configFlag // the verb's config flags, by name
	stderr     io.Writer
	// keepGeneration leaves generation 0 as it is for every verb (config
	// check prints the settings as given).
	keepGeneration bool
	// synopsis and examples of the verb, for its help and man page.
	synopsis, examples string
	level              slog.LevelVar // the loggers' level: a reload may change it
	env                []string      // the FERRY_* settings the environment gave, kept for a reload
}

// newFlags starts the flag set of a verb that reads the config file: it
// has --config and the flags every such verb shares.
func newFlags(name, synopsis, examples string, stderr io.Writer) *common {
	c := newVerbFlags(name, synopsis, examples, stderr)
	c.fs.StringVar(&c.configPath, "config", "", "TOML config `file` (see etc/)")
	c.accept(commonFlags...)
	return c
}

// newVerbFlags starts the flag set of a verb that takes no config file
// (status): parse it with parseArgs.
func newVerbFlags(name, synopsis, examples string, stderr io.Writer) *common {
	c := &common{
		fs:       pflag.NewFlagSet(name, pflag.ContinueOnError),
		accepted: map[string]configFlag{},
		stderr:   stderr,
		synopsis: synopsis,
		examples: examples,
	}
	c.fs.SetOutput(stderr) // deprecation notices
	c.fs.Usage = func() {} // help is the command layer's (errHelp)
	verbFlags.built(c)
	return c
}

// parseArgs parses the command line: flags anywhere among the arguments,
// "--flag" or Go's "-flag", and "--" ending them.
func (c *common) parseArgs(args []string) error {
	err := c.fs.Parse(longFlags(c.fs, args))
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return errHelp
	case err != nil:
		return usageError{flagError(c.fs, err)}
	}
	return nil
}

// parse parses args, loads the config file (or defaults) and applies the
// config flags that were set.
func (c *common) parse(args []string, verb string) error {
	if err := c.parseArgs(args); err != nil {
		return err
	}
	var warnings [][]any // slog messages and attributes, logged once the settings are valid
	// --config, else FERRY_CONFIG, else /etc/ferry/ferry.toml if it exists;
	// the FERRY_* variables override the file, the flags both.
	path, from := config.Locate(c.configPath, os.Getenv, config.DefaultPath)
	cfg, err := config.LoadEnv(path, os.Environ())
	if err != nil {
		return err
	}
	c.cfg, c.configPath, c.configFrom = cfg, path, from
	if keys, mode := config.ExposedSecrets(path, cfg); path != "" && keys != nil {
		warnings = append(warnings, []any{"the config file holds secrets and group or others may read it: chmod 600 it",
			"file", path, "keys", strings.Join(keys, ","), "mode", fmt.Sprintf("%04o", mode)})
	}
	// Not handed on to what this process runs (exec: appliers, where a
	// ferry would take them for its own); kept for a reload (SIGHUP).
	for _, name := range config.EnvSettings(os.Environ()) {
		c.env = append(c.env, name+"="+os.Getenv(name))
	}
	for _, name := range append(config.EnvSettings(os.Environ()), config.PathEnv) {
		os.Unsetenv(name)
	}
	// Visit goes through the set flags in lexical order, so --store, after
	// --listen, wins when both are given.
	var ferr error
	c.fs.Visit(func(f *pflag.Flag) {
		if ferr != nil {
			return
		}
		ferr = c.applyFlag(f)
	})
	if ferr != nil {
		return usageError{ferr}
	}
	if usesLink(c.cfg) {
		if err := c.cfg.TCP.ResolveToken(os.Getenv); err != nil {
			return usageError{err}
		}
		if c.cfg.TCP.TokenSource == config.TokenFromFlag {
			warnings = append(warnings, []any{"--token shows the link token to every user of this host (ps, /proc) and in shell history: use --token-file, FERRY_TOKEN or tcp.token_file"})
		}
	}
	// Not handed on to what this process runs (exec: appliers).
	os.Unsetenv(config.TokenEnv)
	if err := c.cfg.Validate(verb); err != nil {
		return usageError{fmt.Errorf("invalid settings:\n%w", err)}
	}
	log := c.logger(c.stderr)
	for _, w := range warnings {
		log.Warn(w[0].(string), w[1:]...)
	}
	c.logConfigFile(log)
	if verb != "ship" && c.cfg.Generation == 0 && !c.keepGeneration {
		// Only the shippers (ship, push) follow the stream's history
		// when generation is left unset; the other verbs keep to
		// generation 1, as before, until they follow it too.
		c.cfg.Generation = 1
	}
	return nil
}

// logConfigFile says which config file the settings came from: at info
// level for the services (ship, receive, sync), whose start-up log should
// say it, at debug level for the other verbs, which may have to print
// nothing on success (push --quiet).
func (c *common) logConfigFile(log *slog.Logger) {
	level := slog.LevelDebug
	switch c.fs.Name() {
	case "ship", "receive", "sync":
		level = slog.LevelInfo
	}
	if c.configPath == "" {
		log.Log(context.Background(), level, "no config file: defaults, environment and flags",
			"looked_for", "--config, "+config.PathEnv+", "+config.DefaultPath)
		return
	}
	log.Log(context.Background(), level, "config file", "file", c.configPath, "from", c.configFrom)
}

// needStreamStore is a usage error when --stream or --store is missing
// or, when onLink is set (what the verb says to do instead), when the
// store is a tcp:// link.
func needStreamStore(cfg *config.File, onLink string) error {
	switch {
	case cfg.Stream == "":
		return usageError{errors.New("--stream is required")}
	case cfg.Store == "":
		return usageError{errors.New("--store is required")}
	case onLink != "" && strings.HasPrefix(cfg.Store, "tcp://"):
		return usageError{errors.New(onLink)}
	}
	return nil
}

// usesLink reports whether cfg ships, receives or reads over a tcp://
// link: only then is the link token looked for (a token file that cannot
// be read stops only the verbs that need it).
func usesLink(cfg *config.File) bool {
	if strings.HasPrefix(cfg.Store, "tcp://") {
		return true
	}
	for _, t := range cfg.Ship.Targets {
		if strings.HasPrefix(t.Store, "tcp://") {
			return true
		}
	}
	return cfg.Sync.Listen != "" // ferry sync's links (validation: only with peers' links)
}

// parseNoArgs is parse for a verb that takes flags only.
func (c *common) parseNoArgs(args []string, verb string) error {
	if err := c.parse(args, verb); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", c.fs.Args())}
	}
	return nil
}

func (c *common) logger(stderr io.Writer) *slog.Logger {
	c.level.Set(levelOf(c.cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: &c.level}
	if c.cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(stderr, opts))
	}
	return slog.New(slog.NewTextHandler(stderr, opts))
}

// levelOf is the slog level of a log_level value.
func levelOf(name string) slog.Level {
	switch name {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// openStore builds the store named by a URL, creating a directory store
// that does not exist yet: for the verbs that write a store (ship, push).
func openStore(ctx context.Context, cfg *config.File, log *slog.Logger) (store.Store, error) {
	return openStoreWith(ctx, cfg, nil, log)
}

// openStoreWith is openStore with a callback counting an s3:// store's
// requests by kind (the metrics of this process; nil counts nothing).
func openStoreWith(ctx context.Context, cfg *config.File, onS3Request func(kind string), log *slog.Logger) (store.Store, error) {
	return openStoreMode(ctx, cfg, onS3Request, log, false)
}

// openExistingStore is openStore for the verbs that read a store someone
// else writes (ls, cat, verify, receive, restore, drill, fetch, ...): a
// directory store that does not exist is an error naming it, never a new
// empty store.
func openExistingStore(ctx context.Context, cfg *config.File, log *slog.Logger) (store.Store, error) {
	return openExistingStoreWith(ctx, cfg, nil, log)
}

// openExistingStoreWith is openExistingStore with openStoreWith's callback.
func openExistingStoreWith(ctx context.Context, cfg *config.File, onS3Request func(kind string), log *slog.Logger) (store.Store, error) {
	return openStoreMode(ctx, cfg, onS3Request, log, true)
}

func openStoreMode(ctx context.Context, cfg *config.File, onS3Request func(kind string), log *slog.Logger, mustExist bool) (store.Store, error) {
	raw := cfg.Store
	if raw == "" {
		return nil, usageError{errors.New("no store given: use --store URL or store = in the config file")}
	}
	opts := dir.Options{MustExist: mustExist}
	scheme, _, hasScheme := strings.Cut(raw, "://")
	if !hasScheme {
		return openDirWith(raw, opts)
	}
	switch scheme {
	case "file":
		u, err := url.Parse(raw)
		if err != nil {
			return nil, usageError{fmt.Errorf("store URL %q is not a valid URL", redact.URL(raw))} // err quotes it unredacted
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, usageError{fmt.Errorf("store URL %q: file URLs need an absolute path (file:///dir)", redact.URL(raw))}
		}
		return openDirWith(u.Path, opts)
	case "s3":
		return openS3(ctx, cfg, onS3Request, log)
	case "tcp":
		return openTCP(cfg, log)
	}
	return nil, usageError{fmt.Errorf("store URL %q: unknown scheme %q (want a path, file://, s3:// or tcp://)", redact.URL(raw), scheme)}
}

func openDir(path string) (store.Store, error) {
	return openDirWith(path, dir.Options{})
}

// openDirWith is openDir with the store's options.
func openDirWith(path string, opts dir.Options) (store.Store, error) {
	if path == "" {
		return nil, usageError{errors.New("store path is empty")}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	s, err := dir.NewWithOptions(abs, opts)
	if opts.MustExist && errors.Is(err, fs.ErrNotExist) {
		return nil, missingStoreError{abs}
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", abs, err)
	}
	return s, nil
}

// missingStoreError: a directory store that a verb which never creates
// one was pointed at does not exist. It wraps fs.ErrNotExist.
type missingStoreError struct{ path string }

func (e missingStoreError) Error() string {
	return fmt.Sprintf("store %s does not exist (this verb only reads a store; check the path, or ship to it first)", e.path)
}

func (e missingStoreError) Unwrap() error { return fs.ErrNotExist }

// noSuchStream is the error for a stream that has no segments in st,
// naming the streams st holds (when st can list them).
func noSuchStream(ctx context.Context, st store.Store, stream string) error {
	dl, ok := st.(store.DirLister)
	if !ok {
		return fmt.Errorf("stream %q has no segments in %s", stream, st)
	}
	var streams []string
	err := dl.ListDirs(ctx, "", func(name string) error {
		name = strings.TrimSuffix(name, "/")
		if name != stream && batch.CheckStream(name) == nil {
			streams = append(streams, name)
		}
		return nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("stream %q has no segments in %s (listing its streams failed: %v)", stream, st, err)
	case len(streams) == 0:
		return fmt.Errorf("stream %q has no segments in %s, which holds no other stream", stream, st)
	}
	return fmt.Errorf("stream %q has no segments in %s; its streams: %s", stream, st, strings.Join(streams, ", "))
}

// signalContext is cancelled on SIGINT or SIGTERM, which it records for
// run's exit status (stopSignal). A second signal exits at once, with 128
// plus its number.
func signalContext(parent context.Context, log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			stopSignal.CompareAndSwap(0, int32(s.(syscall.Signal)))
			log.Info("signal received; finishing (send it again to exit at once)", "signal", s.String())
			cancel()
		case <-ctx.Done():
			return
		}
		s := <-ch
		os.Exit(128 + int(s.(syscall.Signal)))
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// stopSignal is the first SIGINT or SIGTERM a signalContext received, 0
// for none.
var stopSignal atomic.Int32

// errInterrupted is returned by a verb that a signal stopped before its
// work was done, where it would otherwise return nil: run exits with 128
// plus the signal's number. A long-running receive or ship (a service)
// stopped by a signal returns nil instead and exits 0.
var errInterrupted = errors.New("interrupted before the work was done")

// interrupted wraps errInterrupted with what was left undone if ctx was
// ended by a signal (signalContext), and returns nil otherwise.
func interrupted(ctx context.Context, undone string) error {
	if ctx.Err() == nil || stopSignal.Load() == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", undone, errInterrupted)
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
