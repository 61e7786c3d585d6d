package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/transport/tcp"
)

// The direct link of ferry sync (docs/SYNC.md, "Direct links"): a site
// ships its own stream to every peer's sync.listen as a tcp:// target of
// its shipper, and accepts its link peers' streams on its own sync.listen
// into STATE/inbox, from where each peer's receiver applies them.

// syncTargets sets the shipper's targets of own, a copy of the site's
// config: the top-level store (if any; the store peers read from) and the
// link of every link peer, each named "peer ID".
func syncTargets(own *config.File, peers []config.SyncPeer) {
	own.Ship.Targets = slices.Clone(own.Ship.Targets)
	for _, p := range peers {
		if p.Link != "" {
			own.Ship.Targets = append(own.Ship.Targets, config.Target{Name: "peer " + p.ID, Store: p.Link})
		}
	}
	if own.Store == "" && len(own.Ship.Targets) > 0 {
		// Every peer is a link peer: the first link is the main target.
		own.Store = own.Ship.Targets[0].Store
		own.Ship.Targets = own.Ship.Targets[1:]
	}
}

// syncListener is a site's listener for its link peers' streams.
type syncListener struct {
	srv   *tcp.Server
	inbox store.Store       // the ordinary dir store on STATE/inbox, which the receivers read
	peers map[string]string // stream -> peer id

	mu    sync.Mutex
	recvs map[string]*receiver.Receiver // stream -> its receiver, once opened
}

// recv is stream's receiver, nil until it is opened.
func (l *syncListener) recv(stream string) *receiver.Receiver {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recvs[stream]
}

// serve serves until ctx ends; the channel gets its error (nil at the end
// of ctx), then closes.
func (l *syncListener) serve(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := l.srv.ListenAndServe(ctx)
		if ctx.Err() != nil {
			err = nil
		}
		done <- err
		close(done)
	}()
	return done
}

// openSyncListener builds the listener of sync.listen, admitting each
// link peer to its own stream (name@peer) only, and recovers the inbox
// of each of those streams (segments a crash left torn).
func openSyncListener(ctx context.Context, cfg *config.File, name string, log *slog.Logger) (*syncListener, error) {
	y := cfg.Sync
	inboxDir := filepath.Join(y.State, "inbox")
	// As for ferry receive --listen: the link server publishes before it
	// fsyncs (it acknowledges only after both), the receivers' store keeps
	// the ordinary order.
	put, err := openDirWith(inboxDir, dir.Options{PublishBeforeSync: true})
	if err != nil {
		return nil, err
	}
	inbox, err := openDir(inboxDir)
	if err != nil {
		return nil, err
	}
	lc := *cfg
	lc.Stream = ""
	lc.TCP.Listen = y.Listen
	srv, err := newLinkServer(&lc, put, inbox, log.With("listen", y.Listen))
	if err != nil {
		return nil, fmt.Errorf("sync.listen: %w", err)
	}
	l := &syncListener{srv: srv, inbox: inbox, peers: map[string]string{}, recvs: map[string]*receiver.Receiver{}}
	var ids []string
	for _, p := range y.Peers {
		if p.Link != "" {
			l.peers[name+"@"+p.ID] = p.ID
			ids = append(ids, p.ID)
		}
	}
	sort.Strings(ids)
	site := cfg.Site.ID
	srv.Admit = func(stream, claimed string) error {
		peer, ok := l.peers[stream]
		switch {
		case !ok:
			return fmt.Errorf("sync site %s takes only its link peers' streams (%s@ one of %s), not %q", site, name, strings.Join(ids, ", "), stream)
		case claimed != peer:
			return fmt.Errorf("stream %q is peer %s's own, and this shipper says it is site %q: a site ships only its own stream", stream, peer, claimed)
		}
		return nil
	}
	srv.Applied = func(stream string) uint64 {
		if r := l.recv(stream); r != nil {
			return r.Applied()
		}
		return 0
	}
	srv.Stored = func(stream string, seg *batch.Segment, size int64, data []byte) {
		r := l.recv(stream)
		switch {
		case r == nil:
		case data == nil: // streamed into the inbox, never held
			r.Offer(seg.Meta.Name(), size)
		default:
			r.OfferVerified(seg, data)
		}
	}
	for stream := range l.peers {
		h, err := catalog.ReadHistory(ctx, inbox, stream)
		if err != nil {
			return nil, fmt.Errorf("inbox %s: %w", inboxDir, err)
		}
		for g := uint32(1); g <= h.Newest().Generation; g++ {
			if err := tcp.RecoverInbox(ctx, put, stream, g, log); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// receiving makes r the receiver of stream, if stream comes over the
// listener: segments arriving are offered to it from then on.
func (l *syncListener) receiving(stream string, r *receiver.Receiver) {
	if l == nil {
		return
	}
	if _, ok := l.peers[stream]; ok {
		l.mu.Lock()
		l.recvs[stream] = r
		l.mu.Unlock()
	}
}

// receives reports whether stream comes over the listener.
func (l *syncListener) receives(stream string) bool {
	_, ok := l.peers[stream]
	return ok
}
