// Package spool is the shipper's durable local buffer. Records appended to
// a Spool go to a journal and into the open batch; when the flush policy
// says so the batch is sealed into a segment file (docs/FORMAT.md), which
// waits in the spool until every target has confirmed it. The spool owns
// durable buffering, sealing and the retirement of confirmed segments;
// sending them is the shipper's (package shipper).
//
// This comment defines the layout of a spool directory. One process owns
// a spool at a time (LOCK), and only its Spool writes the files below.
//
// # Files
//
//	DIR/LOCK                        flock of the owning process; holds its pid
//	DIR/state.json                  where the stream stood at the last save
//	DIR/.state.json.tmp             state.json being replaced
//	DIR/journal-<seq>               the journal: the open batch, the one being sealed
//	DIR/journal                     the single journal of older ferry versions
//	DIR/provisional                 records taken before the stream's place was known (Hold)
//	DIR/sealed/<segment name>       sealed segments not yet retired
//	DIR/sealed/.<segment name>.tmp  a seal of an older ferry version, interrupted
//
// A sealed segment may also be a part: a segment sealed into a bundle
// file of the ship's Bundler (package shipper/bundle, in
// <ship.spool>/_bundles/sealed/), which the spool lists among its sealed
// segments (SealedSegment.Bundle, Offset) and reads from there, but never
// writes or removes (part.go).
//
// DIR and DIR/sealed are created (mode 0755) when missing, files with mode
// 0644. Open checks that DIR is writable with a temp file .probe.*.tmp,
// removed at once.
//
// Other parts of ferry keep files of their own in the spool directory,
// which the spool neither reads nor removes: push.sock, the unix socket
// (mode 0600) through which `ferry push` hands files to a running `ferry
// ship`, and pushed/, that command's index of pushed files (cmd/ferry);
// status.json, the report `ferry ship` rewrites every second without
// fsync; dirindex, dirindex.pending and dirbaseline.json, the dir
// source's index and last baseline (package shipper/source); history/, a
// copy of the stream's generation records (history/<stream>/generations/)
// that `ferry promote --spool` writes so that a shipper whose targets are
// all tcp:// links can send its generation's record to the receivers
// (docs/FAILOVER.md). Their temp files and directories start with a dot.
//
// # Names
//
// A journal file is named journal- followed by the seq of its first
// record in 16 lower-case hex digits (journal-000000000000002a), so names
// sort in seq order. A file is named when it is created, before anything
// is written to it, after the seq its first record will get. Segment
// files are named as in a store (batch.SegmentName; docs/FORMAT.md,
// "Naming"):
//
//	GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL.seg.zst
//
// with the generation, the first and the last seq in 8, 16 and 16
// lower-case hex digits. sealed/ holds segments of the spool's generation
// only.
//
// # Journal
//
// The journal holds the records of the open batch and of the batch being
// sealed. Each file is a sequence of entries, appended and never
// rewritten. An entry is the unit of atomicity: the records of one Append
// together with the source cursor reached after them, so a restart
// neither loses nor repeats input. Integers are big-endian:
//
//	u32 body length n (5 <= n <= 2^30) | u32 CRC-32C (Castagnoli) of body | body
//	body: u8 kind (1: records) | u32 cursor length | cursor | record frames
//
// The record frames are those of a segment's record stream
// (docs/FORMAT.md, "Record stream"; batch.AppendFrame), with the seq and
// time Append assigned. The cursor is opaque to the spool (a tailed file's
// position, say); an Append without one repeats the cursor before it.
//
// A short entry, a length out of range, a CRC mismatch or a cursor longer
// than its body is a torn write: the entry was being written when the
// process or the machine stopped, so nothing from it on was reported
// durable, and recovery ends the file there (and logs it). An entry whose
// CRC matches but whose kind is unknown or whose record frames do not
// parse is damage: Open fails.
//
// A spool whose source can give its records again from a cursor (a
// tailed file: SetReplayable) writes no journal entries: its records go
// only into the open batch, a batch is handed off only at the end of an
// Append (so a segment's cursor is the source's position after its last
// record), and a crash loses from the spool only records the source reads
// again from the cursor of the newest sealed segment. WaitDurable then
// seals the open batch. A held spool journals as below until Continue.
//
// Appends go to the newest file. When a batch is handed to the sealer, a
// new file starts, named after the seq that follows the batch; when the
// seal point falls inside an Append's records, the records after it (the
// leftover) are written again at the start of the new file, as an entry
// with that Append's cursor. The older file is removed once the batch's
// segment is durable, so at most two files are live. With
// Config.JournalRotate set (the shipper sets it when appends wait for the
// targets' acks, so nothing commits the journal), a hand-off without a
// leftover keeps the current file until it holds JournalRotate bytes; the
// sealed records in it are skipped by seq on recovery.
//
// # What is fsynced when
//
// Config.Fsync says when the journal reaches the disk:
//
//   - "always": every Append, before it returns.
//   - "batch" (the default): group commit. WaitDurable fsyncs once for all
//     its waiters; while the journal file of the batch being sealed is not
//     durable yet it waits for that seal instead, as the segment makes
//     those records durable in fewer bytes. SyncLoop fsyncs what no waiter
//     asked for, about Config.CommitInterval (default 100 ms) after it was
//     written. The shipper runs StateLoop instead of SyncLoop when appends
//     wait for the targets' acks, which only sealed segments get: the
//     journal is then fsynced only for a leftover (below) and by Close.
//     With Config.Committer (a multi-stream ship) the spools of a process
//     commit together instead (commit.go): Append queues the spool, and the
//     Committer makes every queued spool's journal durable with one
//     syncfs(2) of their file system, within CommitInterval or at once for
//     a waiter, before it advances any spool's durable position. syncfs
//     makes the files and their directory entries durable at once, so the
//     order between a spool's files holds too. Seals share those syncs:
//     a sealed segment written under its name waits for the Committer's
//     next sync (within Committer.SealWait, default CommitInterval)
//     instead of fsyncing itself and sealed/ (where syncfs reports
//     write-back errors: Linux 5.8 and later), and so do state.json's
//     rewrites (below).
//   - "off": never; a crash may lose accepted records.
//
// A new journal file's directory entry is fsynced before its first fsync
// (so is the rename of Continue), and an older file is fsynced before a
// newer one, so no durable record follows one a crash could still lose.
// Close fsyncs the journal unless fsync is "off".
//
// A seal writes the segment straight under its final name (O_EXCL: a
// segment name is never overwritten; an existing file fails the spool),
// then fsyncs the file and sealed/ together, one commit of the file
// system's journal (with a Committer, its next group sync does instead).
// The segment's metadata carries the source cursor after its records
// (source_cursor). When the seal point split an Append that
// moved the cursor, that cursor covers the leftover too, so the leftover
// is fsynced first (unless fsync is "off"), or a crash could skip it. A
// seal that fails removes its file.
//
// state.json is replaced durably: .state.json.tmp written and fsynced,
// renamed to state.json, DIR fsynced. With a Committer that takes seals,
// SaveState's rewrites share its group syncs instead: the temp file is
// written without an fsync and waits for the next group sync, is renamed,
// and the rename waits for the sync after; the confirmed segments the new
// state.json covers are removed only once that second sync has returned,
// and a failed one fails the spool. A crash before the second sync may
// keep the old state.json, whose segments are all still there. The writes
// of Open, Continue and Hold fsync on their own.
//
// LOCK is not fsynced, nor are removals other than recovery's (step 3
// below). A journal file removed after its batch was sealed that a crash
// brings back holds only records recovery skips by seq; a retired segment
// that comes back is sent again, an identical copy every target accepts.
//
// A failed write or fsync fails the spool (ErrFailed): nothing written
// since the last good fsync can be trusted, so it refuses all further
// work; the process must exit, and the next Open recovers. A full disk
// does not fail it: Append refuses with ErrNoSpace having accepted
// nothing (the partial entry is truncated away), and the sealer waits for
// room.
//
// # state.json
//
// One JSON object, which `ferry status` also reads:
//
//	{"format":1,"stream":"app","generation":1,"sealed_seq":1200,
//	 "last_hash":"<64 hex digits>","cursor":"<base64>",
//	 "segment":"00000001-000000000000044d-00000000000004b0.seg.zst"}
//
// format is 1. stream and generation pin the spool to one stream and
// generation: the journal does not name them, so Open refuses a spool of
// another stream, or of another generation than a non-zero
// Config.Generation (zero takes the one state.json names; a new spool is
// in generation 1 unless the config names another). sealed_seq is the
// last seq of the newest segment sealed when it was written, last_hash
// the SHA-256 of that segment, which the next one chains to, cursor the
// source position after it (omitted when none) and segment its name. A
// new spool has 0, batch.ZeroHash and neither cursor nor segment. Continue
// sets generation, sealed_seq and last_hash of a fresh spool to where the
// stream stands: after its newest segment of that generation in a target,
// or at the fork seq and hash of the generation's record.
//
// "unplaced": true (omitted otherwise) marks a spool that was Held: its
// records wait in DIR/provisional, numbered from 1 provisionally and
// never sealed, until Continue numbers them after sealed_seq and clears
// it (provisional.go says how, crash-safely). Recovery of an unplaced
// spool replays only DIR/provisional and removes journal files; recovery
// of a placed one removes a DIR/provisional left behind.
//
// Seals do not rewrite state.json, so it may lag behind sealed/; the
// newest segment's metadata says where the stream and the source stand,
// and Open brings state.json up to it. SaveState rewrites it: from Confirm
// when confirmed segments wait for it and Config.StateEvery (default 1 s)
// has passed since the last write (in the background with a Committer,
// which Close waits for); from StateLoop or SyncLoop when that
// time comes without a Confirm; when an Append waits for room; when the
// shipper has drained the spool; and on Close. Open writes it for a new
// spool, and after adopting segments; Continue writes it when a fresh
// spool continues a stream found in a target.
//
// # Retirement
//
// A sealed segment leaves the spool once every target has confirmed it
// (Confirm) and state.json covers it (sealed_seq at or past its last
// seq): recovery continues from state.json through the segments after it,
// so it never needs one that is gone. Confirmations are kept in memory
// only: after a restart every segment still in sealed/ is pending for
// every target. Up to four files are removed at once by the caller, more
// in the background, one a millisecond; one that cannot be removed is
// logged, and sent again after the next restart.
//
// # What Open does
//
// Open creates DIR if needed, checks it is writable, takes the flock on
// LOCK (failing at once if another process holds it; the lock goes with
// the process, so a crash leaves none behind) and recovers:
//
//  1. It reads state.json; a damaged one, or one of another stream or
//     (when Config.Generation is set) generation, fails Open. A new spool
//     gets one.
//  2. It lists sealed/. A file there starting with a dot is the temp file
//     of an interrupted seal of an older ferry version: it is removed,
//     unless it is the segment state.json names and that segment's file
//     is missing; then it is checked against last_hash and renamed into
//     place (sealed/ fsynced). Any other name that is not a segment of
//     this generation fails Open.
//  3. It adopts the segments newer than state.json, in seq order: each
//     must continue the chain (first seq sealed_seq+1, prev_sha256
//     last_hash) and gives its cursor. Only the newest may be damaged, by
//     a crash before its fsync: no target was sent it, so it is removed
//     (and sealed/ fsynced) and its records come back from the journal.
//     Another damaged segment fails Open. If any was adopted, state.json
//     is rewritten.
//  4. It replays the journal files in name order, "journal" first, each
//     up to its first torn entry, into the open batch. Records already in
//     a segment, or replayed from an older file (a leftover is in both),
//     are skipped by seq; any other jump in seq is a gap and fails Open. A
//     file that starts past the records recovered so far follows one that
//     lost its unsynced tail in a crash: nothing in it was acknowledged,
//     so it and every later file are dropped. The cursor becomes that of
//     the last entry that added records.
//  5. It creates this run's journal file, named after the next seq
//     (truncated if it exists: it can only hold dropped records). If
//     records were replayed, they are sealed at once into a segment
//     (reason "restart"), and the replayed files are removed once it is
//     durable; otherwise the old files are removed right away.
//
// Every record that was durable is then in exactly one segment, in seq
// order, and the cursor is the one after the last of them.
package spool
