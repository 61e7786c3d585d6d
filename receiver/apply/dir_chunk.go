//go:build linux

package apply

import (
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// Chunked files are assembled in ROOT/.ferry-staging/<seq>.part (seq of
// the first chunk) and renamed into place by their last chunk.

// dirPartial is a chunked file being assembled.
type dirPartial struct {
	Path   string `json:"path"`
	Seq    uint64 `json:"seq"` // of its first chunk; names the staging file
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"` // bytes assembled
	Ino    uint64 `json:"ino"`    // of the staging file; recognises it once renamed into place
	Hash   []byte `json:"hash"`   // sha256 state after Offset bytes

	f     *os.File
	h     hash.Hash
	dirty bool // written since the last fsync
	// lost: the staging file was gone on restore. The crash came after the
	// file was published or dropped; its remaining chunks are skipped.
	lost bool
}

func (p *dirPartial) clone() (*dirPartial, error) {
	c := &dirPartial{Path: p.Path, Seq: p.Seq, Size: p.Size, Offset: p.Offset, Ino: p.Ino, Hash: p.Hash, lost: p.lost}
	if p.h != nil {
		b, err := p.h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return nil, err
		}
		c.Hash = b
	}
	return c, nil
}

func dirStagingFile(seq uint64) string { return fmt.Sprintf("%016x.part", seq) }

// continues says whether rec is the next chunk of the file being assembled.
func (a *Dir) continues(rec *batch.Record, key string) bool {
	p := a.partial
	if rec.Op != dirtree.OpChunk || key != p.Path {
		return false
	}
	h, _, err := dirtree.ParseHeader(rec.Data)
	return err == nil && h.Offset > 0 && h.Offset == p.Offset && h.Size == p.Size
}

// chunk adds a chunk (checked by dirtree.CheckPayload) to the file being
// assembled and publishes the file on its last chunk.
func (a *Dir) chunk(recs batch.Records, i int, key string, h dirtree.Header, payload []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), receiver.ErrFatal)
	}
	if h.Offset == 0 {
		if err := a.startPartial(recs.Seq(i), key, h.Size); err != nil {
			return err
		}
	} else if a.partial == nil {
		return bad("chunk at offset %d, but no file is being assembled (its chunk at offset 0 is missing)", h.Offset)
	}
	p := a.partial
	if !p.lost {
		if _, err := p.f.WriteAt(payload, h.Offset); err != nil {
			return err
		}
		p.h.Write(payload)
		p.dirty = true
	}
	p.Offset += int64(len(payload))
	if p.Offset < p.Size {
		return nil
	}
	if p.lost {
		// Published or dropped before the crash; the replica holds the
		// published file unless a later record of this segment changed it.
		a.partial = nil
		if a.isPublished(key, p.Ino) || dirSuperseded(recs, i, key) {
			return nil
		}
		return bad("the staging file for %q (chunks from seq %d) is missing from %s and the replica does not hold the published file; it was removed outside ferry",
			key, p.Seq, dirtree.StagingDir)
	}
	if [32]byte(p.h.Sum(nil)) != h.SHA256 {
		a.dropPartial()
		return bad("assembled content of %d bytes does not match the sha256 in the last chunk", p.Size)
	}
	return a.publish(recs, i, key, h)
}

func (a *Dir) isPublished(key string, ino uint64) bool {
	dir, base, err := a.openParent(key, false)
	if err != nil {
		return false
	}
	defer dir.Close()
	var st unix.Stat_t
	return unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Ino == ino
}

func (a *Dir) publish(recs batch.Records, i int, key string, h dirtree.Header) error {
	p := a.partial
	if err := a.writeOut(p.f, nil, h); err != nil {
		return err
	}
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		if skip {
			return a.dropPartial()
		}
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	err = dirKeepMtime(fd, func() error {
		return dirReplace(int(a.staging.Fd()), dirStagingFile(p.Seq), fd, base)
	})
	if errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("rename %s/%s to %q: the replica spans filesystems; the dir applier needs the whole tree on one: %w",
			dirtree.StagingDir, dirStagingFile(p.Seq), key, receiver.ErrFatal)
	}
	if err != nil {
		return err
	}
	p.f.Close()
	a.partial = nil
	if err := a.syncLater(a.staging); err != nil {
		return err
	}
	return a.syncLater(dir)
}

// openStaging opens ROOT/.ferry-staging, creating it if create is set. It
// returns a nil file (and no error) when it does not exist.
func (a *Dir) openStaging(create bool) (*os.File, error) {
	if a.staging != nil {
		return a.staging, nil
	}
	rfd := int(a.root.Fd())
	fd, err := dirOpenAt(rfd, dirtree.StagingDir)
	if errors.Is(err, unix.ENOENT) && create {
		err = dirMkdirKeepMtime(rfd, dirtree.StagingDir, 0o700)
		if err == nil {
			if err = a.syncLater(a.root); err == nil {
				fd, err = dirOpenAt(rfd, dirtree.StagingDir)
			}
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, dirFatal("open %s: %v", dirtree.StagingDir, err)
	}
	a.staging = os.NewFile(uintptr(fd), a.Root+"/"+dirtree.StagingDir)
	return a.staging, nil
}

func (a *Dir) startPartial(seq uint64, key string, size int64) error {
	sd, err := a.openStaging(true)
	if err != nil {
		return err
	}
	name := dirStagingFile(seq)
	sfd := int(sd.Fd())
	if err := unix.Unlinkat(sfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	fd, err := unix.Openat(sfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	a.partial = &dirPartial{Path: key, Seq: seq, Size: size, Ino: st.Ino,
		f: os.NewFile(uintptr(fd), sd.Name()+"/"+name), h: sha256.New(), dirty: true}
	return a.syncLater(sd)
}

// dropPartial abandons the file being assembled (the source started over
// or moved on) and removes its staging file.
func (a *Dir) dropPartial() error {
	p := a.partial
	a.partial = nil
	if p.f != nil {
		p.f.Close()
	}
	if p.lost || a.staging == nil {
		return nil
	}
	if err := unix.Unlinkat(int(a.staging.Fd()), dirStagingFile(p.Seq), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// clearStaging removes everything in the staging directory but keep, and
// the directory itself when keep is empty.
func (a *Dir) clearStaging(keep string) error {
	sd, err := a.openStaging(false)
	if err != nil || sd == nil {
		return err
	}
	l, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(sd.Fd())))
	if err != nil {
		return dirFatal("list %s: %v", dirtree.StagingDir, err)
	}
	names, err := l.Readdirnames(-1)
	l.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return dirFatal("list %s: %v", dirtree.StagingDir, err)
	}
	for _, n := range names {
		if n != keep {
			if err := dirRemoveAll(int(sd.Fd()), n); err != nil {
				return dirFatal("clean %s: %v", dirtree.StagingDir, err)
			}
		}
	}
	if keep != "" {
		return nil
	}
	sd.Close()
	a.staging = nil
	rfd := int(a.root.Fd())
	err = dirKeepMtime(rfd, func() error {
		if err := unix.Unlinkat(rfd, dirtree.StagingDir, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	})
	if err != nil {
		return dirFatal("remove %s: %v", dirtree.StagingDir, err)
	}
	if a.syncs != nil {
		return a.syncLater(a.root)
	}
	return nil
}
