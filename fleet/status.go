package fleet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// MemberStatus is one member object as ferry status shows it.
type MemberStatus struct {
	MemberRecord
	Live    bool   `json:"live"`
	Damaged string `json:"damaged,omitempty"`
}

// LeaseStatus is one lease object as ferry status shows it.
type LeaseStatus struct {
	LeaseRecord
	Live    bool   `json:"live"` // held: not released, not expired
	Damaged string `json:"damaged,omitempty"`
}

// ReadStatus reads every member and lease object of fleet name, judged
// live by now, without their tokens. Damaged objects are reported, not
// skipped.
func ReadStatus(ctx context.Context, sw store.Swapper, name string, now time.Time) ([]MemberStatus, []LeaseStatus, error) {
	if err := CheckName("fleet name", name); err != nil {
		return nil, nil, err
	}
	var members []MemberStatus
	err := readAll(ctx, sw, MembersDir(name), "", func(key string, data []byte, _ string, err error) {
		ms := MemberStatus{}
		if err == nil {
			ms.MemberRecord, err = parseMember(data, name, key)
		}
		if err != nil {
			ms = MemberStatus{Damaged: err.Error()} // nothing of a damaged object is shown as fact
			ms.Member = lastElem(key)
		} else {
			ms.Live = !ms.Left && ms.Expires.After(now)
		}
		ms.Token = "" // a holder's identity, not shown
		members = append(members, ms)
	})
	if err != nil {
		return nil, nil, err
	}
	var leases []LeaseStatus
	err = readAll(ctx, sw, LeasesDir(name), "", func(key string, data []byte, _ string, err error) {
		ls := LeaseStatus{}
		if err == nil {
			ls.LeaseRecord, err = parseLease(data, name, key)
		}
		if err != nil {
			ls = LeaseStatus{Damaged: err.Error()}
			ls.Stream = lastElem(key)
		} else {
			ls.Live = !ls.Released && ls.Expires.After(now)
		}
		ls.Token = ""
		leases = append(leases, ls)
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Member < members[j].Member })
	sort.Slice(leases, func(i, j int) bool { return leases[i].Stream < leases[j].Stream })
	return members, leases, nil
}

// readAll lists dir and Loads each object but except, giving fn its
// content and version, or the error (wrapping store.ErrPermanent) of one
// too large to load. Objects gone since the listing are skipped; any
// other error stops it.
func readAll(ctx context.Context, sw store.Swapper, dir, except string, fn func(key string, data []byte, version string, err error)) error {
	var keys []string
	if err := sw.List(ctx, dir, "", func(o store.Object) error {
		keys = append(keys, o.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, key := range keys {
		if key == except {
			continue
		}
		data, ver, err := sw.Load(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil && !errors.Is(err, store.ErrPermanent) {
			return fmt.Errorf("read %s: %w", key, err)
		}
		fn(key, data, ver, err)
	}
	return nil
}
