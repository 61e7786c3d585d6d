// Package multi runs many streams in one shipper process ([[streams]]
// tables, docs/STREAMS.md). Each stream is a whole shipper.Shipper with
// its own spool (its own sequence, journal, checkpoint and writer lease)
// fed by its own source; the runner starts them, picks up the files a
// glob table matches as they appear, finishes a stream whose file was
// removed (everything read is sealed and shipped, then it is closed), and
// stops them all together.
//
// What the streams share is the process: the targets' stores (opened
// once by the caller), the zstd encoders every spool's Builders compress
// with (package batch keeps one per level for the process, a fixed number
// of compressions at once, waiting ones served in arrival order), and the
// CPUs. Each stream's backpressure is its own: its appends wait for its
// own seal in flight and its own spool limit, so a stream that floods
// slows down itself, not the others' appends.
package multi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/bundle"
	"github.com/ferry-dr/ferry/shipper/spool"
)

// Table is one [[streams]] table as the runner needs it.
type Table struct {
	// Name is the stream's name; for a glob table, NameOf names each
	// file's stream instead.
	Name string
	// Path is the file the stream follows, or, with Glob, the pattern
	// (filepath.Match) whose files each get a stream.
	Path string
	Glob bool
	// Scan is how often a glob table looks for new files. Default 1s.
	Scan time.Duration
	// NameOf is a glob table's template: the stream of a matching file.
	NameOf func(file string) (string, error)
}

// Runner runs the streams of Tables until its context ends.
type Runner struct {
	Tables []Table
	// SpoolRoot holds one spool directory per stream, named after it. A
	// directory there whose stream no table starts (a glob stream's file
	// removed while ferry was stopped) is drained: what its spool holds
	// is shipped, then it is left alone. One that holds nothing (a stream
	// that finished: spool.Empty) is not opened.
	SpoolRoot string
	// Start opens the shipper of stream name (its spool, under SpoolRoot)
	// and the source that feeds it from file; table is the index in
	// Tables, -1 for a leftover spool (file ""), which needs no source.
	// A glob stream's source must end (Run returns nil) once its file is
	// removed and read to the end (source.Tail EndWhenGone).
	Start func(ctx context.Context, table int, name, file string) (*shipper.Shipper, shipper.Source, error)
	// Ended, if set, is called with each stream's shipper once it has
	// drained (or failed to), before it is closed: a summary.
	Ended func(name string, sh *shipper.Shipper, err error)
	// ShutdownTimeout bounds each stream's drain once the runner is told
	// to stop. Default 30s.
	ShutdownTimeout time.Duration
	// Bundler, if set, seals the streams' small batches into bundles
	// (package shipper/bundle): Run runs it while any stream runs, and
	// each stream is registered with it once started. Start must open each
	// stream's spool with Bundler.Parts(name).
	Bundler *bundle.Bundler
	Log     *slog.Logger

	stat func(string) (os.FileInfo, error) // os.Stat; tests count the calls

	mu      sync.Mutex
	active  map[string]string // stream name -> file, while it runs
	refused map[string]bool   // files refused (name taken, bad name): logged once
	fail    error             // the first fatal error
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// Run starts every stream and runs until ctx ends (then drains each,
// within ShutdownTimeout) or a stream fails: a fatal error of one stream
// (its shipper's, its source's) stops them all, and Run returns it,
// naming the stream.
func (r *Runner) Run(ctx context.Context) error {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.ShutdownTimeout <= 0 {
		r.ShutdownTimeout = 30 * time.Second
	}
	if r.stat == nil {
		r.stat = os.Stat
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.active, r.refused, r.stop = map[string]string{}, map[string]bool{}, cancel
	r.mu.Unlock()
	if r.Bundler != nil {
		// It outlives ctx: the streams' drains need their last parts put.
		bctx, stopBundler := context.WithCancel(context.Background())
		bdone := make(chan error, 1)
		go func() { bdone <- r.Bundler.Run(bctx) }()
		go func() {
			select {
			case err := <-bdone:
				if err != nil {
					r.failed(fmt.Errorf("bundles: %w", err))
				}
				bdone <- nil
			case <-bctx.Done():
			}
		}()
		defer func() {
			stopBundler()
			<-bdone
		}()
	}

	for i, t := range r.Tables {
		if !t.Glob {
			r.launch(ctx, i, t.Name, t.Path)
		}
	}
	for i, t := range r.Tables {
		if t.Glob {
			r.scan(ctx, i) // the first scan before the leftovers are looked for
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.scanLoop(ctx, i) }()
		}
	}
	r.drainLeftovers(ctx)
	<-ctx.Done()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail
}

// Active returns the names of the streams running now, sorted.
func (r *Runner) Active() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.active))
}

func (r *Runner) failed(err error) {
	r.mu.Lock()
	if r.fail == nil {
		r.fail = err
	}
	stop := r.stop
	r.mu.Unlock()
	stop()
}

func (r *Runner) scanLoop(ctx context.Context, table int) {
	every := r.Tables[table].Scan
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.scan(ctx, table)
		}
	}
}

// scan starts a stream for every regular file of a glob table that has
// none running.
func (r *Runner) scan(ctx context.Context, table int) {
	t := r.Tables[table]
	files, err := filepath.Glob(t.Path)
	if err != nil {
		r.failed(fmt.Errorf("streams[%d] glob %q: %w", table, t.Path, err))
		return
	}
	for _, file := range files {
		name, nameErr := t.NameOf(file)
		r.mu.Lock()
		other, running := r.active[name]
		r.mu.Unlock()
		if nameErr == nil && running && other == file {
			continue // its stream runs: no stat per file per scan
		}
		if fi, err := r.stat(file); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if nameErr != nil {
			r.refuse(file, "file matches streams[%d] but names no valid stream; not shipped", table, "err", nameErr)
			continue
		}
		switch {
		case !running:
			r.launch(ctx, table, name, file)
		case other == "":
			// A leftover spool of that name is being drained: the file
			// gets its stream on a scan after that.
		case other != file:
			r.refuse(file, "file's stream name is taken by another file; not shipped", "stream", name, "other", other)
		}
	}
}

// refuse logs a file that gets no stream, once.
func (r *Runner) refuse(file, msg string, args ...any) {
	r.mu.Lock()
	seen := r.refused[file]
	r.refused[file] = true
	r.mu.Unlock()
	if !seen {
		r.Log.Error(msg, append([]any{"path", file}, args...)...)
	}
}

// drainLeftovers ships what the spools of streams no table started hold:
// a glob stream whose file was removed while ferry was stopped, before
// its last records were shipped. An empty spool is left alone.
func (r *Runner) drainLeftovers(ctx context.Context) {
	ents, err := os.ReadDir(r.SpoolRoot)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.failed(fmt.Errorf("spool %s: %w", r.SpoolRoot, err))
		}
		return
	}
	var bundled []string // streams with parts in the Bundler's bundles
	if r.Bundler != nil {
		bundled = r.Bundler.Streams()
	}
	for _, e := range ents {
		dir := filepath.Join(r.SpoolRoot, e.Name())
		if !e.IsDir() || e.Name() == bundle.DirName {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
			continue
		}
		if err := batch.CheckStream(e.Name()); err != nil {
			// Not a stream's spool (a copy an operator made): opening it
			// would fail, and stop every stream with it.
			r.Log.Error("directory in the spool root is named like no stream; not shipped", "dir", dir, "err", err)
			continue
		}
		r.mu.Lock()
		_, running := r.active[e.Name()]
		r.mu.Unlock()
		if running {
			continue
		}
		if empty, err := spool.Empty(dir); err == nil && empty && !slices.Contains(bundled, e.Name()) {
			// A stream that finished (its file removed and read to the
			// end, everything shipped) leaves its spool so: nothing to do.
			// An error here is Open's to report.
			continue
		}
		r.Log.Warn("spool of a stream no table runs now (its file was removed while ferry was stopped?): shipping what it holds; "+
			"lines its file had past the spool's cursor are lost with the file", "stream", e.Name())
		r.launch(ctx, -1, e.Name(), "")
	}
}

// launch runs stream name in its own goroutine, registered as active
// until it ends.
func (r *Runner) launch(ctx context.Context, table int, name, file string) {
	r.mu.Lock()
	if _, dup := r.active[name]; dup {
		r.mu.Unlock()
		return
	}
	r.active[name] = file
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.runStream(ctx, table, name, file)
		r.mu.Lock()
		delete(r.active, name)
		r.mu.Unlock()
		if err != nil {
			r.failed(fmt.Errorf("stream %s: %w", name, err))
		}
	}()
}

// ended is the source of a leftover spool: there is nothing to read.
type ended struct{}

func (ended) Run(context.Context, shipper.Sink) error { return nil }

// runStream runs one stream: its shipper and its source, until ctx ends
// or the source does (a removed file), then drains it and closes it.
func (r *Runner) runStream(ctx context.Context, table int, name, file string) error {
	sh, src, err := r.Start(ctx, table, name, file)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped while the stream was starting: not its failure.
			// What its spool holds stays there for the next start.
			r.Log.Info("stream not started: stopping", "stream", name)
			return nil
		}
		return err
	}
	if src == nil {
		src = ended{}
	}
	if r.Bundler != nil {
		r.Bundler.Register(name, sh)
	}
	r.Log.Info("stream started", "stream", name, "path", file, "generation", sh.Generation(), "resume_after_seq", sh.Spool().Stats().LastSeq)
	// Run outlives ctx: it sends what the drain seals.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- sh.Run(runCtx) }()
	srcCtx, stopSrc := context.WithCancel(ctx)
	defer stopSrc()
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(srcCtx, sh) }()

	var fatal error
	select {
	case err := <-srcErr:
		if err != nil && ctx.Err() == nil {
			fatal = fmt.Errorf("input %s: %w", file, err)
		}
	case fatal = <-runErr:
		stopSrc()
		<-srcErr
	}
	if fatal == nil {
		fatal = r.drain(ctx, sh, runErr)
	}
	stopRun()
	if r.Ended != nil {
		r.Ended(name, sh, fatal)
	}
	if r.Bundler != nil {
		r.Bundler.Unregister(name)
	}
	if err := sh.Close(); err != nil && fatal == nil {
		fatal = err
	}
	if fatal == nil && ctx.Err() == nil {
		r.Log.Info("stream finished: its input ended and everything read is shipped", "stream", name, "path", file,
			"last_seq", sh.Spool().Stats().LastSeq)
	}
	return fatal
}

// drain seals the stream's open batch and waits for its targets, or for
// ShutdownTimeout after ctx ends.
func (r *Runner) drain(ctx context.Context, sh *shipper.Shipper, runErr <-chan error) error {
	drainCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		t := time.NewTimer(r.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-done:
		}
	}()
	drained := make(chan error, 1)
	go func() { drained <- sh.Drain(drainCtx) }()
	select {
	case err := <-drained:
		return err
	case err := <-runErr:
		if err == nil {
			err = errors.New("stopped before its spool was drained")
		}
		return err
	}
}
