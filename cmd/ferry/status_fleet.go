package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/fleet"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// fleetStatus is `ferry status --fleet NAME --store URL`: read from the
// store alone, so it can be run anywhere.
type fleetStatus struct {
	Fleet   string               `json:"fleet"`
	Members []fleet.MemberStatus `json:"members"`
	Streams []fleetStream        `json:"streams"`
}

type fleetStream struct {
	Stream  string `json:"stream"`
	Owner   string `json:"owner,omitempty"` // the live lease's member; "" if none
	Stored  uint64 `json:"stored_seq"`      // newest seq in the store
	Applied uint64 `json:"applied_seq"`     // the fleet's published watermark
	Lag     uint64 `json:"lag_records"`
	Damaged string `json:"damaged,omitempty"` // a damaged lease object
}

func readFleetStatus(ctx context.Context, storeURL, name string) (*fleetStatus, error) {
	cfg := config.Defaults()
	cfg.Store = storeURL
	st, err := openExistingStoreWith(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	sw, err := store.AsSwapper(st, "ferry status --fleet")
	if err != nil {
		return nil, err
	}
	tl, ok := st.(store.TreeLister)
	if !ok {
		return nil, fmt.Errorf("ferry status --fleet needs a dir or s3 store, not %s", st)
	}
	members, leases, err := fleet.ReadStatus(ctx, sw, name, time.Now())
	if err != nil {
		return nil, err
	}
	streams, err := receiver.ListStreams(ctx, tl)
	if err != nil {
		return nil, err
	}
	leaseOf := make(map[string]fleet.LeaseStatus, len(leases)) // one lease object per stream
	for _, l := range leases {
		leaseOf[l.Stream] = l
	}
	out := &fleetStatus{Fleet: name, Members: members}
	for _, ss := range streams {
		fs := fleetStream{Stream: ss.Stream}
		if k := len(ss.Segments); k > 0 {
			_, _, fs.Stored, _ = batch.ParseSegmentName(path.Base(ss.Segments[k-1].Name))
		}
		if l, ok := leaseOf[ss.Stream]; ok {
			fs.Damaged = l.Damaged
			if l.Live {
				fs.Owner = l.Member
			}
		}
		wms, err := catalog.ReadWatermarks(ctx, st, ss.Stream)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", ss.Stream, err)
		}
		for _, w := range wms {
			if w.Receiver == name {
				fs.Applied = w.AppliedSeq
			}
		}
		if fs.Stored > fs.Applied {
			fs.Lag = fs.Stored - fs.Applied
		}
		out.Streams = append(out.Streams, fs)
	}
	return out, nil
}

func printFleetStatus(w io.Writer, s *fleetStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "fleet %s\n\nMEMBER\tLIVE\tHOST\tPID\tSTREAMS\tRENEWED\n", s.Fleet)
	for _, m := range s.Members {
		if m.Damaged != "" {
			fmt.Fprintf(tw, "%s\tdamaged\t%s\t\t\t\n", m.Member, m.Damaged)
			continue
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%d\t%s\n", m.Member, m.Live, m.Host, m.PID, m.Streams, m.Renewed.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "\nSTREAM\tOWNER\tSTORED\tAPPLIED\tLAG\n")
	for _, st := range s.Streams {
		owner := st.Owner
		if owner == "" {
			owner = "-"
		}
		if st.Damaged != "" {
			owner = "damaged lease: " + st.Damaged
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", st.Stream, owner, st.Stored, st.Applied, st.Lag)
	}
	tw.Flush()
}
