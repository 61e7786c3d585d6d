package dirtree

import (
	"errors"
	"fmt"
	"strings"
)

// Names the dir applier keeps its own files under in the replica. No key
// may name them, and the source never ships paths with these names.
const (
	// StagingDir is ROOT/.ferry-staging, where chunked files are assembled.
	StagingDir = ".ferry-staging"
	// TempPrefix and TempSuffix frame the temp file a put, symlink or
	// chunked file is written to beside its target (TempName).
	TempPrefix = ".ferry-"
	TempSuffix = ".tmp"
)

// maxKey is the longest key, in bytes (PATH_MAX).
const maxKey = 4096

// TempName is the applier's temp file for the record with seq.
func TempName(seq uint64) string {
	return fmt.Sprintf("%s%016x%s", TempPrefix, seq, TempSuffix)
}

// Reserved says whether key is a name the applier reserves: the staging
// directory or anything under it, or a last element of the temp-file shape.
func Reserved(key string) bool {
	first, _, _ := strings.Cut(key, "/")
	if first == StagingDir {
		return true
	}
	base := key[strings.LastIndexByte(key, '/')+1:]
	return strings.HasPrefix(base, TempPrefix) && strings.HasSuffix(base, TempSuffix)
}

// CheckKey refuses a key that is not a clean relative path (empty, "." or
// ".." elements, a leading "/", a NUL byte, too long) or that names what
// the applier reserves. The root "." may only be named by mkdir.
func CheckKey(key, op string) error {
	switch {
	case key == "":
		return errors.New("empty path")
	case key == ".":
		if op != OpMkdir {
			return fmt.Errorf("op %s on the root: only mkdir may name it", op)
		}
		return nil
	case key[0] == '/':
		return errors.New("absolute path")
	case len(key) > maxKey:
		return fmt.Errorf("path is %d bytes, limit %d", len(key), maxKey)
	case strings.IndexByte(key, 0) >= 0:
		return errors.New("path contains a NUL byte")
	}
	elems := strings.Split(key, "/")
	for _, e := range elems {
		switch {
		case e == "":
			return errors.New("empty path element (\"//\" or a trailing \"/\")")
		case e == "." || e == "..":
			return fmt.Errorf("path element %q", e)
		case len(e) > 255:
			return fmt.Errorf("path element of %d bytes, limit 255", len(e))
		}
	}
	if elems[0] == StagingDir {
		return fmt.Errorf("%s is reserved for the applier's staging directory", StagingDir)
	}
	if b := elems[len(elems)-1]; strings.HasPrefix(b, TempPrefix) && strings.HasSuffix(b, TempSuffix) {
		return fmt.Errorf("names %s*%s are reserved for the applier's temp files", TempPrefix, TempSuffix)
	}
	return nil
}
