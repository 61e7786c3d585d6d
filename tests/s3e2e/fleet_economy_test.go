package s3e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// Requests to S3 per poll of a many-stream receive whose streams are all
// idle, counted by the proxy: one shared listing per poll whatever the
// number of streams, plus, in a fleet, one lease renewal per stream per
// ttl/3 and the heartbeat.
func TestIdleStreamsRequestsS3(t *testing.T) {
	for _, c := range []struct {
		streams int
		fleet   bool
	}{{100, false}, {100, true}} { // 1 stream: receiver/multi_test.go
		t.Run(fmt.Sprintf("%d-fleet-%v", c.streams, c.fleet), func(t *testing.T) {
			h := newHarness(t, withProxy)
			ctx := context.Background()
			client := h.srv.Client(t)
			for i := range c.streams {
				stream := fmt.Sprintf("s%03d", i)
				seg := receivertest.SealSeg(t, stream, 1, 1, 3, batch.ZeroHash)
				key := "idle/" + batch.SegmentKey(stream, seg.Name)
				if _, err := client.PutObject(ctx, h.bucket, key, bytes.NewReader(seg.Data), int64(len(seg.Data)), minio.PutObjectOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			root := t.TempDir()
			args := []string{"receive", "--store", "s3://" + h.bucket + "/idle", "--stream", "s*", "--state", filepath.Join(root, "state"),
				"--apply", "file:" + filepath.Join(root, "{stream}.log"), "--poll-min", "1s", "--poll-max", "1s"}
			if c.fleet {
				args = append(args, "--fleet", "dr", "--fleet-member", "m1", "--fleet-ttl", "3s")
			}
			started := time.Now()
			p := h.start(nil, nil, args...)
			deadline := time.Now().Add(2 * time.Minute)
			for i := 0; i < c.streams; {
				if b, _ := os.ReadFile(filepath.Join(root, fmt.Sprintf("s%03d.log", i))); len(b) > 0 {
					i++
					continue
				}
				if time.Now().After(deadline) || p.Exited() {
					t.Fatalf("stream s%03d not applied:\n%s", i, p.Stderr())
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("all %d streams applied %v after the start", c.streams, time.Since(started).Round(time.Millisecond))
			time.Sleep(2 * time.Second) // the last first passes
			before := h.proxy.Counts()
			const window = 9 * time.Second
			time.Sleep(window)
			after := h.proxy.Counts()
			var parts []string
			total := 0
			for _, k := range []versitygw.Kind{versitygw.List, versitygw.Get, versitygw.Put, versitygw.Head, versitygw.Delete, versitygw.Other} {
				n := after[k] - before[k]
				total += n
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
			polls := window.Seconds() // poll_min = poll_max = 1s
			t.Logf("%d idle streams, fleet %v: %s in %v: %.1f requests per 1s poll", c.streams, c.fleet, strings.Join(parts, ", "), window, float64(total)/polls)
			lists := after[versitygw.List] - before[versitygw.List]
			maxLists := int(polls) + 2 // one per poll, plus slack for the window's edges
			if c.fleet {
				maxLists += int(window/time.Second) + 1 // the members listing, every ttl/3 = 1s
			}
			if lists > maxLists {
				t.Errorf("%d LISTs in %v with %d idle streams: want about one per poll (at most %d)", lists, window, c.streams, maxLists)
			}
			if c.fleet {
				// 1 renewal per stream and one heartbeat per ttl/3.
				if puts, want := after[versitygw.Put]-before[versitygw.Put], (c.streams+1)*int(window/time.Second); puts > want+2*(c.streams+1) {
					t.Errorf("%d PUTs in %v: want about %d (a renewal per stream and a heartbeat per second)", puts, window, want)
				}
			} else if n := after[versitygw.Put] - before[versitygw.Put] + after[versitygw.Get] - before[versitygw.Get]; n != 0 {
				t.Errorf("idle streams made %d GETs and PUTs", n)
			}
			p.Terminate(30 * time.Second)
		})
	}
}
