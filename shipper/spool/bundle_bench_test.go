package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store/dir"
)

// The evidence for bundle segments (issue 23; docs/STREAMS.md "Bundle
// segments"): what N streams' small batches cost sealed and stored as N
// segments, against one bundle of N parts. Everything but the bundle's
// spool file is the real code: the Builder's encoder, the spool (for
// segments), the dir store's Put and Get, the segment decoder and
// batch's bundle writer and reader. The bundle's spool file (write,
// fsync, rename, fsync the directory, remove once stored) is prototyped
// here, as the wiring plan describes it.

const (
	benchBundleStreams = 100
	benchBundleRecords = 200 // per stream and round, ~100 bytes each
)

// benchBundleRounds is how many rounds of records are made before a
// benchmark's clock starts; the rounds reuse them in turn, so that making
// log lines (fmt) is not counted as sealing them.
const benchBundleRounds = 8

// benchBundleData is benchBundleRounds rounds of every stream's batch, and
// each round's batches one after another (the one-stream variant's).
type benchBundleData struct {
	batches [benchBundleRounds][][]batch.Record
	all     [benchBundleRounds][]batch.Record
	// long is each stream's batches of every round in one (a tick 8
	// times as long), longAll all of them.
	long    [][]batch.Record
	longAll []batch.Record
}

func newBenchBundleData() *benchBundleData {
	d := &benchBundleData{}
	for r := range benchBundleRounds {
		for i := range benchBundleStreams {
			recs := benchBundleBatch(i, r)
			d.batches[r] = append(d.batches[r], recs)
			d.all[r] = append(d.all[r], recs...)
		}
	}
	d.long = make([][]batch.Record, benchBundleStreams)
	for i := range benchBundleStreams {
		for r := range benchBundleRounds {
			d.long[i] = append(d.long[i], d.batches[r][i]...)
		}
		d.longAll = append(d.longAll, d.long[i]...)
	}
	return d
}

// benchBundleBatch is one round's records of stream i: log lines of about
// 100 bytes.
func benchBundleBatch(i, round int) []batch.Record {
	recs := make([]batch.Record, benchBundleRecords)
	t := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC).Add(time.Duration(round) * time.Second)
	for j := range recs {
		recs[j] = batch.Record{Time: t, Data: fmt.Appendf(nil,
			"2026-12-05T21:00:%02d.%06dZ INFO stream=%03d http GET /api/v1/orders/%06d status=200 dur=%dms\n",
			round%60, j*997%1000000, i, (round*benchBundleRecords+j)*7919%1000000, j%250)}
	}
	return recs
}

// BenchmarkBundleShip seals and stores one small batch of each of 100
// streams per op:
//
//   - segments: the real path, 100 spools sharing a Committer (group
//     sync, as a multi-stream ship runs them), each sealing its batch and
//     the segment put into a dir store, then confirmed.
//   - segment-files: the prototype's path with one file per stream: each
//     segment built by a Builder, written to its own spool file, fsynced,
//     renamed (one directory fsync for all), put, removed. It tells the
//     prototype's costs from the real spool's.
//   - bundle: the same segments built by the same Builders, written into
//     one bundle file (one write, fsync, rename, directory fsync), one
//     put, removed.
//   - one-stream: the same records, all 100 batches in one segment of one
//     stream, written and put as segment-files does: what issue 23's
//     target compares with (one stream carrying the same lines).
//   - bundle-x8, one-stream-x8: bundle and one-stream with 8 times the
//     records per stream (1,600 each): a bundle tick 8 times as long.
//
// cpu-ms/op is the process's CPU time (user+system) per op: 100 stream
// segments; cpu-us/stream-seg divides it by 100.
func BenchmarkBundleShip(b *testing.B) {
	b.Run("segments", benchShipSegments)
	b.Run("segment-files", func(b *testing.B) { benchShipProto(b, "segment-files") })
	b.Run("bundle", func(b *testing.B) { benchShipProto(b, "bundle") })
	b.Run("one-stream", func(b *testing.B) { benchShipProto(b, "one-stream") })
	b.Run("bundle-x8", func(b *testing.B) { benchShipProto(b, "bundle-x8") })
	b.Run("one-stream-x8", func(b *testing.B) { benchShipProto(b, "one-stream-x8") })
}

func reportPerSegment(b *testing.B, cpu0 time.Duration) {
	per := float64(cpuTime()-cpu0) / float64(b.N)
	b.ReportMetric(per/float64(time.Millisecond), "cpu-ms/op")
	b.ReportMetric(per/float64(time.Microsecond)/benchBundleStreams, "cpu-us/stream-seg")
}

func benchShipSegments(b *testing.B) {
	c := NewCommitter(100 * time.Millisecond)
	c.SealSync = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	root := b.TempDir()
	st, err := dir.New(filepath.Join(root, "store"))
	if err != nil {
		b.Fatal(err)
	}
	var sps []*Spool
	for i := range benchBundleStreams {
		sp, err := Open(Config{Dir: filepath.Join(root, "spool", fmt.Sprint(i)), Stream: fmt.Sprintf("s%03d", i),
			Fsync: FsyncBatch, Committer: c, JournalRotate: 1 << 20}, nil, quiet)
		if err != nil {
			b.Fatal(err)
		}
		defer sp.Close()
		sp.SetReplayable() // as a tail: source (the default) is: no journal
		sps = append(sps, sp)
	}
	stored := make([]uint64, len(sps)) // each spool's last seq put
	data := newBenchBundleData()
	cpu0 := cpuTime()
	b.ResetTimer()
	for round := range b.N {
		var wg sync.WaitGroup
		for i, sp := range sps {
			recs := data.batches[round%benchBundleRounds][i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := sp.Append(ctx, recs, fmt.Appendf(nil, "cursor %d", round)); err != nil {
					b.Error(err)
					return
				}
				if err := sp.Seal("age"); err != nil {
					b.Error(err)
					return
				}
				for _, seg := range sp.Pending(stored[i]) {
					data, err := sp.ReadSealed(seg.Name)
					if err == nil {
						err = st.Put(ctx, batch.SegmentKey(sp.Config().Stream, seg.Name), data)
					}
					if err != nil {
						b.Error(err)
						return
					}
					sp.Confirm("", seg.LastSeq)
					stored[i] = seg.LastSeq
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	reportPerSegment(b, cpu0)
}

// protoStream is one stream of the prototype: its Builder and chain.
type protoStream struct {
	name string
	b    *batch.Builder
	prev string
	seq  uint64
}

// seal builds the stream's segment of one round.
func (p *protoStream) seal(recs []batch.Record) ([]byte, string, error) {
	p.b.Reset(p.name, 1, p.prev)
	for i := range recs {
		p.seq++
		recs[i].Seq = p.seq
		if err := p.b.Add(&recs[i]); err != nil {
			return nil, "", err
		}
	}
	data, _, err := p.b.Seal(time.Now())
	if err != nil {
		return nil, "", err
	}
	p.prev = p.b.Hash()
	return data, p.prev, nil
}

// writeSpoolFile is a spool's durable write of a sealed file: a temp file
// written and fsynced, renamed to name. The caller fsyncs the directory.
func writeSpoolFile(dirPath, name string, data []byte) error {
	tmp := filepath.Join(dirPath, name+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dirPath, name))
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func benchShipProto(b *testing.B, mode string) {
	bundle := strings.HasPrefix(mode, "bundle")
	ctx := context.Background()
	root := b.TempDir()
	st, err := dir.New(filepath.Join(root, "store"))
	if err != nil {
		b.Fatal(err)
	}
	sealed := filepath.Join(root, "spool", "sealed")
	if err := os.MkdirAll(sealed, 0o755); err != nil {
		b.Fatal(err)
	}
	streams := make([]*protoStream, benchBundleStreams)
	for i := range streams {
		bl, err := batch.NewBuilder(batch.Fastest)
		if err != nil {
			b.Fatal(err)
		}
		streams[i] = &protoStream{name: fmt.Sprintf("s%03d", i), b: bl, prev: batch.ZeroHash}
	}
	var buf bytes.Buffer
	input := newBenchBundleData()
	cpu0 := cpuTime()
	b.ResetTimer()
	for round := range b.N {
		buf.Reset()
		w := batch.NewBundleWriter(&buf)
		var names, keys []string
		var datas [][]byte
		for i, s := range streams {
			recs := input.batches[round%benchBundleRounds][i]
			switch mode {
			case "one-stream":
				s, recs = streams[0], input.all[round%benchBundleRounds]
			case "bundle-x8":
				recs = input.long[i]
			case "one-stream-x8":
				s, recs = streams[0], input.longAll
			}
			data, hash, err := s.seal(recs)
			if err != nil {
				b.Fatal(err)
			}
			if bundle {
				if err := w.Add(data, hash); err != nil {
					b.Fatal(err)
				}
				continue
			}
			m, _, err := batch.ParseMeta(data)
			if err != nil {
				b.Fatal(err)
			}
			name := s.name + "-" + m.Name()
			if err := writeSpoolFile(sealed, name, data); err != nil {
				b.Fatal(err)
			}
			names, keys, datas = append(names, name), append(keys, batch.SegmentKey(s.name, m.Name())), append(datas, data)
			if strings.HasPrefix(mode, "one-stream") {
				break
			}
		}
		if bundle {
			if _, err := w.Close(); err != nil {
				b.Fatal(err)
			}
			name := batch.BundleName(uint64(round + 1))
			if err := writeSpoolFile(sealed, name, buf.Bytes()); err != nil {
				b.Fatal(err)
			}
			names, keys, datas = []string{name}, []string{"_bundles/w/" + name}, [][]byte{buf.Bytes()}
		}
		if err := syncDir(sealed); err != nil {
			b.Fatal(err)
		}
		for i := range names {
			if err := st.Put(ctx, keys[i], datas[i]); err != nil {
				b.Fatal(err)
			}
			if err := os.Remove(filepath.Join(sealed, names[i])); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	reportPerSegment(b, cpu0)
}

// BenchmarkBundleRead is the read side of a receiver applying all 100
// streams (as one many-stream receive does): per op, one round's 100
// segments read from a dir store and decoded to their records (a Get
// each), against one bundle of the same 100 segments (one Get, the index,
// then each part opened and decoded). What applying the records costs
// is the same either way and not measured.
func BenchmarkBundleRead(b *testing.B) {
	ctx := context.Background()
	st, err := dir.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const rounds = 16
	var buf bytes.Buffer
	var keys [rounds][]string
	streams := make([]*protoStream, benchBundleStreams)
	for i := range streams {
		bl, err := batch.NewBuilder(batch.Fastest)
		if err != nil {
			b.Fatal(err)
		}
		streams[i] = &protoStream{name: fmt.Sprintf("s%03d", i), b: bl, prev: batch.ZeroHash}
	}
	for round := range rounds {
		buf.Reset()
		w := batch.NewBundleWriter(&buf)
		for i, s := range streams {
			data, hash, err := s.seal(benchBundleBatch(i, round))
			if err != nil {
				b.Fatal(err)
			}
			m, _, _ := batch.ParseMeta(data)
			key := batch.SegmentKey(s.name, m.Name())
			if err := st.Put(ctx, key, data); err != nil {
				b.Fatal(err)
			}
			keys[round] = append(keys[round], key)
			if err := w.Add(data, hash); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := st.Put(ctx, "_bundles/w/"+batch.BundleName(uint64(round+1)), buf.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	get := func(key string, rbuf []byte) ([]byte, error) {
		rc, err := st.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return batch.ReadSegment(rc, rbuf, 0, batch.DefaultMaxSegmentBytes)
	}
	b.Run("segments", func(b *testing.B) {
		var rbuf []byte
		cpu0 := cpuTime()
		for n := 0; b.Loop(); n++ {
			for _, key := range keys[n%rounds] {
				data, err := get(key, rbuf)
				if err != nil {
					b.Fatal(err)
				}
				if _, recs, err := batch.Decode(data, 0); err != nil || recs.Len() != benchBundleRecords {
					b.Fatal(err)
				}
				rbuf = data[:0]
			}
		}
		reportPerSegment(b, cpu0)
	})
	b.Run("bundle", func(b *testing.B) {
		var pbuf []byte
		cpu0 := cpuTime()
		for n := 0; b.Loop(); n++ {
			rc, err := st.Get(ctx, "_bundles/w/"+batch.BundleName(uint64(n%rounds+1)))
			if err != nil {
				b.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				b.Fatal(err)
			}
			bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
			if err != nil {
				b.Fatal(err)
			}
			for i := range bd.Parts {
				s, raw, err := bd.OpenPart(i, pbuf)
				if err != nil {
					b.Fatal(err)
				}
				if recs, err := s.Records(0); err != nil || recs.Len() != benchBundleRecords {
					b.Fatal(err)
				}
				pbuf = raw[:0]
			}
		}
		reportPerSegment(b, cpu0)
	})
}
