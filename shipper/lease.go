package shipper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// One writer per stream: before it sends anything, a shipper takes the
// stream's writer lease in every target that can compare-and-swap
// (store.Swapper: dir and s3, not tcp:// links, whose receiver admits one
// shipper itself), renews it every TTL/3, and gives it up when it closes.
// What the lease guarantees, store by store, is in docs/FENCING.md.

// DefaultLeaseTTL is LeaseConfig.TTL when it is zero.
const DefaultLeaseTTL = 30 * time.Second

// LeaseConfig configures the writer lease.
type LeaseConfig struct {
	// TTL is how long a lease lasts from its last renewal. It must exceed
	// the worst clock skew between the shippers' hosts plus the longest
	// pause of a shipper (GC, VM freeze). Default DefaultLeaseTTL;
	// negative: no lease, which leaves nothing to stop a second shipper
	// on the stream but the stores' overlap checks (unsafe).
	TTL time.Duration
	// Site names this site in the lease, and in the errors of a shipper
	// it keeps out. Default: the host name.
	Site string
}

// LeaseVersion is the writer lease format this ferry writes and reads.
const LeaseVersion = 1

// LeaseKey is the store object of stream's writer lease.
func LeaseKey(stream string) string { return stream + "/claims/writer.json" }

// WriterLease is the JSON content of a writer lease. Its holder is the
// shipper with Token; it is live until Expires by the reader's clock. A
// released lease has Expires at the time of release.
type WriterLease struct {
	Version    int       `json:"version"`
	Stream     string    `json:"stream"`
	Site       string    `json:"site"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Spool      string    `json:"spool"` // absolute path of the holder's spool
	Generation uint32    `json:"generation"`
	Token      string    `json:"token"` // random, one per shipper: the holder's identity
	Acquired   time.Time `json:"acquired"`
	Renewed    time.Time `json:"renewed"`
	Expires    time.Time `json:"expires"`
	Renewals   uint64    `json:"renewals"` // makes every write's content unique (store.Swapper)
	Released   bool      `json:"released,omitempty"`
}

// holder describes who holds l, for messages.
func (l WriterLease) holder() string {
	return fmt.Sprintf("site %s (host %s, pid %d, spool %s, generation %d)", l.Site, l.Host, l.PID, l.Spool, l.Generation)
}

// parseLease decodes a lease of stream, with an error saying how it is
// damaged if it is not one.
func parseLease(data []byte, stream string) (WriterLease, error) {
	var l WriterLease
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("damaged: %v", err)
	}
	switch {
	case l.Version > LeaseVersion:
		return l, fmt.Errorf("has version %d; this ferry reads %d (upgrade ferry)", l.Version, LeaseVersion)
	case l.Version < 1:
		return l, fmt.Errorf("damaged: version %d", l.Version)
	case l.Stream != stream:
		return l, fmt.Errorf("damaged: it says stream %q", l.Stream)
	case l.Token == "":
		return l, fmt.Errorf("damaged: no token")
	}
	return l, nil
}

// ErrLeaseHeld marks New's refusal to start while another shipper holds
// the stream's writer lease.
var ErrLeaseHeld = errors.New("held by another shipper")

// ErrLeaseLost marks a shipper whose writer lease another shipper took:
// it stops, and sends nothing more.
var ErrLeaseLost = errors.New("lost the writer lease")

// lease is this shipper's hold on the writer lease in one target.
type lease struct {
	target Target
	sw     store.Swapper
	key    string
	ttl    time.Duration
	// margin: a Put starts no later than Renewed+ttl-margin by this
	// host's clock. A successor takes over at Expires by its own clock, so
	// the Put is done before then if clock skew + pause + the Put's
	// duration stay under the margin (docs/FENCING.md).
	margin time.Duration

	mu       sync.Mutex // one Swap at a time; guards the rest
	rec      WriterLease
	version  string
	lost     error
	released bool
}

// leaseIdentity is the part of a lease that names this shipper.
func (s *Shipper) leaseIdentity(gen uint32) (WriterLease, error) {
	spoolDir, err := filepath.Abs(s.cfg.Spool.Dir)
	if err != nil {
		return WriterLease{}, err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	site := s.cfg.Lease.Site
	if site == "" {
		site = host
	}
	var tok [16]byte
	rand.Read(tok[:])
	return WriterLease{Version: LeaseVersion, Stream: s.cfg.Spool.Stream, Site: site, Host: host, PID: os.Getpid(),
		Spool: spoolDir, Generation: gen, Token: hex.EncodeToString(tok[:])}, nil
}

// acquireLeases takes the writer lease in every target that can hold one,
// waiting out store errors if wait is set (Shipper.try). On error, those
// taken already are released.
func (s *Shipper) acquireLeases(ctx context.Context, wait bool, gen uint32, hist batch.History) error {
	if s.cfg.Lease.TTL < 0 {
		return nil
	}
	me, err := s.leaseIdentity(gen)
	if err != nil {
		return err
	}
	for _, t := range s.cfg.Targets {
		sw, ok := t.Store.(store.Swapper)
		if !ok || store.IsSegmentsOnly(t.Store) {
			continue
		}
		l := &lease{target: t, sw: sw, key: LeaseKey(s.cfg.Spool.Stream), ttl: s.leaseTTL(), margin: s.leaseTTL() / 3}
		if err := s.acquire(ctx, wait, l, me, hist); err != nil {
			s.releaseLeases()
			s.leases = nil
			return err
		}
		s.leases = append(s.leases, l)
	}
	return nil
}

func (s *Shipper) leaseTTL() time.Duration {
	if s.cfg.Lease.TTL == 0 {
		return DefaultLeaseTTL
	}
	return s.cfg.Lease.TTL
}

// watchEvery is how often an idle shipper looks at the history
// (watchHistory): at the lease's renewal pace, which bounds how long a
// fenced shipper keeps the lease from the promoted site.
func (s *Shipper) watchEvery() time.Duration {
	if s.cfg.Lease.TTL < 0 {
		return DefaultLeaseTTL / 3
	}
	return s.leaseTTL() / 3
}

// acquire takes l for me: it creates the lease object, or replaces one
// that has expired or been released, that this spool held before its
// process ended (the spool's lock, which this process holds, proves that
// holder gone), or whose holder's generation the history has fenced. A
// live lease of another holder is an error wrapping ErrLeaseHeld.
func (s *Shipper) acquire(ctx context.Context, wait bool, l *lease, me WriterLease, hist batch.History) error {
	log := s.log.With("store", l.target.Store.String())
	where := fmt.Sprintf("writer lease %s in %s", l.key, l.target.Store)
	old := ""
	for tries := 1; ; tries++ {
		now := time.Now()
		rec := me
		rec.Acquired, rec.Renewed, rec.Expires = now, now, now.Add(l.ttl)
		data, _ := json.Marshal(rec)
		var v string
		err := s.try(ctx, wait, l.target.Store, "swap "+l.key, func(ctx context.Context) (err error) {
			v, err = l.sw.Swap(ctx, l.key, data, old)
			return err
		})
		if err == nil {
			l.rec, l.version = rec, v
			log.Info("took the writer lease", "stream", rec.Stream, "site", rec.Site, "ttl", l.ttl)
			return nil
		}
		if !errors.Is(err, store.ErrChanged) || tries == 5 {
			return fmt.Errorf("take %s: %w", where, err)
		}
		// Someone holds it, or it changed since it was read: look at it.
		var cur []byte
		err = s.try(ctx, wait, l.target.Store, "load "+l.key, func(ctx context.Context) (err error) {
			cur, old, err = l.sw.Load(ctx, l.key)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			old = ""
			continue
		}
		if errors.Is(err, store.ErrPermanent) {
			// The store refuses the object itself (one too large to be a
			// lease): as damaged as one that does not parse.
			return fmt.Errorf("read %s: %w; if no shipper writes stream %q, delete it", where, err, me.Stream)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", where, err)
		}
		held, err := parseLease(cur, me.Stream)
		if err != nil {
			return fmt.Errorf("%s %v; if no shipper writes stream %q, delete it", where, err, me.Stream)
		}
		why, err := judgeLease(held, me, now, hist)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		level := slog.LevelWarn
		if held.Released {
			level = slog.LevelInfo
		}
		log.Log(ctx, level, "taking over the writer lease", "why", why, "holder", held.holder(), "expires", held.Expires)
	}
}

// judgeLease decides whether me may take over the lease held: why says
// why it may; otherwise the error, wrapping ErrLeaseHeld, names the
// holder and when its lease expires.
func judgeLease(held, me WriterLease, now time.Time, hist batch.History) (why string, err error) {
	switch {
	case held.Released:
		return "released", nil
	case !now.Before(held.Expires):
		return "expired", nil
	case held.Host == me.Host && held.Spool == me.Spool:
		return "held by this spool before its process ended", nil
	case hasHistory(hist) && held.Generation < me.Generation && errors.Is(hist.Fenced(held.Generation), batch.ErrFenced):
		return fmt.Sprintf("its generation %d is fenced", held.Generation), nil
	}
	return "", fmt.Errorf("%w, %s, renewed at %s, until %s (%s from now): stop that shipper, or wait until its lease expires",
		ErrLeaseHeld, held.holder(), held.Renewed.UTC().Format(time.RFC3339), held.Expires.UTC().Format(time.RFC3339),
		held.Expires.Sub(now).Round(100*time.Millisecond))
}

// swapLocked replaces the lease with next, at the version last written. A
// lease that changed meanwhile but still carries this shipper's token (an
// earlier Swap whose answer was lost stored it) is adopted and swapped
// again; otherwise the lease is lost. l.mu held.
func (l *lease) swapLocked(ctx context.Context, next WriterLease) error {
	data, _ := json.Marshal(next)
	v, err := store.SwapOwn(ctx, l.sw, l.key, data, l.version, func(cur []byte) bool {
		held, perr := parseLease(cur, l.rec.Stream)
		return perr == nil && held.Token == l.rec.Token && !held.Released
	})
	if err == nil {
		l.rec, l.version = next, v
		return nil
	}
	var changed *store.ChangedError
	if !errors.As(err, &changed) {
		return fmt.Errorf("swap writer lease %s in %s: %w", l.key, l.target.Store, err)
	}
	switch {
	case errors.Is(changed.LoadErr, store.ErrNotFound):
		l.lost = fmt.Errorf("%w: %s in %s was deleted; another shipper may write stream %q: stopping",
			ErrLeaseLost, l.key, l.target.Store, l.rec.Stream)
		return l.lost
	case changed.LoadErr != nil:
		return fmt.Errorf("writer lease %s in %s changed, and reading it failed: %w", l.key, l.target.Store, changed.LoadErr)
	}
	who := "someone"
	if held, perr := parseLease(changed.Current, l.rec.Stream); perr == nil {
		who = held.holder()
	}
	l.lost = fmt.Errorf("%w: %s in %s was taken by %s: another shipper writes stream %q now; stopping",
		ErrLeaseLost, l.key, l.target.Store, who, l.rec.Stream)
	return l.lost
}

// renewLocked extends the lease by its TTL from now. l.mu held.
func (l *lease) renewLocked(ctx context.Context) error {
	if l.lost != nil {
		return l.lost
	}
	if l.released {
		return fmt.Errorf("%w: %s in %s was released", ErrLeaseLost, l.key, l.target.Store)
	}
	next := l.rec
	// Renewed is read before the Swap is sent, so the lease is reckoned
	// to expire no later than it does in the store.
	now := time.Now()
	next.Renewed, next.Expires = now, now.Add(l.ttl)
	next.Renewals++
	return l.swapLocked(ctx, next)
}

func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewLocked(ctx)
}

// ensure makes sure the lease is ours for at least its margin by this
// host's clock, renewing it first if not: the check before each Put of a
// segment to the target.
func (l *lease) ensure(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if time.Now().Before(l.rec.Renewed.Add(l.ttl - l.margin)) {
		return nil
	}
	return l.renewLocked(ctx)
}

// renewedAt is when the lease was last renewed.
func (l *lease) renewedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Renewed
}

// release gives the lease up, so a successor need not wait for it to
// expire: it is swapped to a released state that expires now. A lease
// lost or released already is left alone.
func (l *lease) release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil || l.released || l.version == "" {
		return nil
	}
	next := l.rec
	now := time.Now()
	next.Renewed, next.Expires, next.Released = now, now, true
	next.Renewals++
	err := l.swapLocked(ctx, next)
	l.released = true
	return err
}

// leaseLoop renews l every TTL/3 until ctx ends. A failed renewal is
// retried under the retry policy, its waits capped at TTL/3; until one
// succeeds, no segment goes to the target once the lease may have expired
// (ensure). A lease taken by another shipper halts the shipper.
func (s *Shipper) leaseLoop(ctx context.Context, l *lease) error {
	every := l.ttl / 3
	p := s.retry
	if p.Max <= 0 || p.Max > every {
		p.Max = every
	}
	log := s.log.With("store", l.target.Store.String())
	for {
		// ensure may have renewed it meanwhile: wait for the renewal due.
		for wait := time.Until(l.renewedAt().Add(every)); wait > 0; wait = time.Until(l.renewedAt().Add(every)) {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		err := store.Retry(ctx, p, log, "renew writer lease "+l.key, l.renew)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseLost):
			return s.halt(err)
		case err != nil:
			// One store.Retry does not retry (a permanent store error):
			// keep trying at the renewal pace, as ensure does before a Put.
			log.Warn("renew writer lease failed", "err", err, "retry_in", every)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(every):
			}
		}
	}
}

// releaseLeases gives up every lease held (Close, or a failed New).
func (s *Shipper) releaseLeases() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range s.leases {
		if err := l.release(ctx); err != nil {
			s.log.Warn("release writer lease", "store", l.target.Store.String(), "err", err)
		}
	}
}

// leaseOf returns the lease held in target t, nil if none.
func (s *Shipper) leaseOf(t Target) *lease {
	for _, l := range s.leases {
		if l.target.Name == t.Name {
			return l
		}
	}
	return nil
}
