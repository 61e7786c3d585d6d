package apply

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
)

// Exec runs a shell command once per segment with the records' data
// on stdin and FERRY_STREAM, FERRY_GENERATION, FERRY_FIRST_SEQ,
// FERRY_LAST_SEQ and FERRY_SEGMENT in its environment. A non-zero exit is
// retried with backoff and the checkpoint stays; the command sees a segment
// again after a crash, so it should be idempotent by FERRY_LAST_SEQ. A
// command still running after Timeout (if set) is killed with its process
// group and retried like a failed one.
type Exec struct {
	Command string
	Timeout time.Duration // 0: none
	Stdout  io.Writer     // default os.Stderr (stdout may carry data)
	Stderr  io.Writer     // default os.Stderr
}

var _ receiver.Applier = (*Exec)(nil)

func (a *Exec) String() string { return "exec:" + a.Command }

func (a *Exec) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	parent := ctx
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", a.Command)
	cmd.Env = append(os.Environ(),
		"FERRY_STREAM="+meta.Stream,
		"FERRY_GENERATION="+strconv.FormatUint(uint64(meta.Generation), 10),
		"FERRY_FIRST_SEQ="+strconv.FormatUint(meta.FirstSeq, 10),
		"FERRY_LAST_SEQ="+strconv.FormatUint(meta.LastSeq, 10),
		"FERRY_SEGMENT="+meta.Name(),
	)
	// On cancellation or timeout kill the whole process group: a child the
	// shell started must not go on applying after the receiver stopped or
	// gave up on it (and re-runs the segment), nor hold the stdin pipe and
	// block Wait.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = a.Stdout, a.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stderr
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	written := make(chan struct{})
	go func() {
		defer close(written)
		w := bufio.NewWriterSize(pw, 1<<20)
		for i := range recs.Len() {
			if _, err := w.Write(recs.Data(i)); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Flush())
	}()
	err := cmd.Run()
	pr.Close()
	<-written // the records are not touched after Apply returns
	if err != nil && parent.Err() == nil && ctx.Err() != nil {
		return fmt.Errorf("apply exec %q for segment %s: still running after exec_timeout %s: killed with its process group (%v)", a.Command, meta.Name(), a.Timeout, err)
	}
	if err != nil {
		return fmt.Errorf("apply exec %q for segment %s: %w", a.Command, meta.Name(), err)
	}
	return nil
}

func (a *Exec) Close() error { return nil }
