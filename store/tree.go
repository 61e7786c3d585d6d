package store

import "context"

// TreeLister is a Store that can list every object under a "directory" at
// any depth in one listing: for S3 one ListObjectsV2 without a delimiter
// (one request per 1,000 objects), for a directory one walk. A receiver of
// many streams uses it to see which streams moved with one listing per
// poll instead of one per stream (package receiver, multi.go).
type TreeLister interface {
	// ListTree calls fn for each object under dir ("" or ending in "/"),
	// however deep, in ascending lexical order of name within each
	// "directory" (the order across directories is the store's). If fn
	// returns an error, ListTree stops and returns it. A missing dir lists
	// nothing and returns nil.
	//
	// descend, if not nil, is asked of each sub-directory (its name ending
	// in "/") before it is walked; one it refuses is not walked, so a
	// directory store does not even stat it. A store that lists a prefix
	// in one flat listing (S3) may still report objects under a refused
	// directory: callers that must not see them filter. nil walks
	// everything.
	ListTree(ctx context.Context, dir string, descend func(sub string) bool, fn func(Object) error) error
}
