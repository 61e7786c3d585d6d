// Package source holds the inputs of `ferry ship`. Each turns something
// that changes into records for a shipper.Sink, together with a cursor
// that the spool stores atomically with them, so a restart resumes where
// the spool stopped: stdin and other streams (Reader, line.go: the line,
// ndjson and raw formats), a growing file (Tail, tail.go) and a directory
// tree (Dir, dir*.go; Linux only). cmd/ferry picks one by ship.source and
// runs it against the Shipper; package shipper does not know the sources.
package source
