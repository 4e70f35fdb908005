package nginxlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// drainIdle is how long a rotated-away file is still read after its last
// growth (nginx writes to it until it reopens its logs).
const drainIdle = 5 * time.Second

// spoolFile is one open generation of the log file.
type spoolFile struct {
	f       *os.File
	ino     uint64
	off     int64 // next byte to read
	done    int64 // bytes before this are processed (whole lines)
	freed   int64 // bytes before this are zeroed or punched out
	pending []byte
	skip    bool // discarding the rest of an over-long line
	lastNew time.Time
	// modeWas is the mode the file had when it was opened, if it was
	// wider than SpoolFileMode allows and was narrowed (or narrowErr says
	// why not); 0 when it was narrow already.
	modeWas   os.FileMode
	narrowErr error
}

// ownerOnly is perm narrowed to SpoolFileMode's owner-only bits.
func ownerOnly(perm os.FileMode) os.FileMode { return perm & SpoolFileMode & 0o700 }

// narrowSpoolFile takes group and other permissions off an open spool file
// that nginx created itself (0644 under the usual umask: it opens its logs
// before the agent can create them, and re-creates them at every
// rename-style rotation), so that it has no more than SpoolFileMode's
// owner-only mode, whoever owns it. nginx is not disturbed: its workers
// write through descriptors they already hold, and its master (root)
// reopens by path; on reopen it only adds u+rw, never group or other
// bits. It returns the mode the file had when it was wider, and the error
// of the chmod (without CAP_FOWNER the agent cannot chmod a file that is
// nginx's).
func narrowSpoolFile(f *os.File, mode uint32) (os.FileMode, error) {
	perm := os.FileMode(mode & 0o7777)
	if mode&unix.S_IFMT != unix.S_IFREG || perm&^SpoolFileMode&0o7077 == 0 {
		return 0, nil
	}
	narrow := ownerOnly(perm)
	if err := unix.Fchmod(int(f.Fd()), uint32(narrow)); err != nil {
		return perm, fmt.Errorf("chmod %04o %s: %w", narrow, f.Name(), err)
	}
	return perm, nil
}

// spool reads complete lines from the log file, frees them once handled and
// follows the file when it is renamed, replaced or truncated.
type spool struct {
	path    string
	maxLine int
	buf     []byte
	cur     *spoolFile
	old     *spoolFile // the previous generation, drained until idle
	now     func() time.Time
	onLine  func([]byte)
	onLong  func()
	// onRead, when set, is called after the lines of one read were handed
	// to onLine: they alias buf, which the next read overwrites.
	onRead func()
	// beforeFree, when set, runs after a read has handled lines and before
	// they are freed: the fault point of FaultEnv.
	beforeFree func()
	// onNarrow, when set, is told about every file whose mode was narrowed
	// (or could not be) when the spool took it over.
	onNarrow func(path string, from, to os.FileMode, err error)
	reopens  uint64 // generations opened after the first
	truncs   uint64
}

func newSpool(path string, maxLine int, onLine func([]byte), onLong func()) *spool {
	return &spool{path: path, maxLine: maxLine, buf: make([]byte, 4*maxLine+256<<10), now: time.Now, onLine: onLine, onLong: onLong}
}

// open opens the file at path and positions at its first unconsumed byte:
// the first byte that is not in a hole and not zero (consumed bytes are
// punched out or zeroed).
func openSpoolFile(path string) (*spoolFile, error) {
	// Read-write: punching holes and zeroing consumed bytes need it.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	sf := &spoolFile{f: f, ino: st.Ino}
	sf.modeWas, sf.narrowErr = narrowSpoolFile(f, st.Mode)
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	if err != nil {
		off = st.Size // ENXIO: no data at all
	}
	var b [4096]byte
	for off < st.Size {
		n, err := f.ReadAt(b[:], off)
		i := 0
		for i < n && b[i] == 0 {
			i++
		}
		off += int64(i)
		if i < n || err != nil {
			break
		}
	}
	sf.off, sf.done, sf.freed = off, off, off&^4095
	return sf, nil
}

// poll reads what is new in the current (and a rotated-away) file, handles
// complete lines, and returns the number of bytes read.
func (s *spool) poll() (int, error) {
	if s.cur == nil {
		if err := s.open(); errors.Is(err, os.ErrNotExist) {
			return 0, nil
		} else if err != nil {
			return 0, err
		}
	}
	total := 0
	if s.old != nil {
		n, err := s.read(s.old)
		total += n
		if err != nil || s.now().Sub(s.old.lastNew) > drainIdle {
			s.free(s.old, true)
			s.old.f.Close()
			s.old = nil
		}
	}
	n, err := s.read(s.cur)
	total += n
	if err != nil {
		return total, err
	}
	if n == 0 {
		s.checkReplaced()
	}
	return total, nil
}

// open opens the current file at path.
func (s *spool) open() error {
	f, err := openSpoolFile(s.path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.path, err)
	}
	f.lastNew = s.now()
	s.cur = f
	s.narrowed(f)
	return nil
}

// read reads and handles up to one buffer of f.
func (s *spool) read(f *spoolFile) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.f.Fd()), &st); err == nil && st.Size < f.off {
		// Truncated (copytruncate): start over at its first data.
		s.truncs++
		f.off, f.done, f.freed, f.pending, f.skip = 0, 0, 0, f.pending[:0], false
	}
	n0 := len(f.pending)
	copy(s.buf, f.pending)
	n, err := f.f.ReadAt(s.buf[n0:], f.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("reading %s: %w", s.path, err)
	}
	if n == 0 {
		return 0, nil
	}
	f.off += int64(n)
	f.lastNew = s.now()
	data := s.buf[:n0+n]
	start := 0
	for i := n0; i < len(data); i++ {
		nl := bytes.IndexByte(data[i:], '\n')
		if nl < 0 {
			break
		}
		i += nl
		if f.skip {
			f.skip = false
		} else if line := data[start:i]; len(line) > s.maxLine {
			s.onLong()
		} else if len(line) > 0 {
			s.onLine(line)
		}
		start = i + 1
	}
	rest := data[start:]
	if len(rest) > s.maxLine {
		if !f.skip {
			s.onLong()
		}
		f.skip, rest = true, rest[:0]
	}
	if s.onRead != nil {
		s.onRead()
	}
	f.pending = append(f.pending[:0], rest...)
	f.done = f.off - int64(len(f.pending))
	if f.skip {
		f.done = f.off
	}
	if s.beforeFree != nil && start > 0 {
		s.beforeFree()
	}
	// Free what was handled at once and exactly: the caller holds the
	// collector's batch (Ingest.pollBatch), so no scrape sees these lines counted
	// while the spool still holds them. An agent killed before this line
	// counted nothing anybody saw, and its successor reads the lines again;
	// killed after it, they are counted and gone.
	s.free(f, true)
	return n, nil
}

// free releases the processed part of f: whole pages are punched out; with
// exact, the processed bytes of the last partial page are zeroed too, so that
// a restarted reader starts exactly after them.
func (s *spool) free(f *spoolFile, exact bool) {
	fd := int(f.f.Fd())
	if page, from := f.done&^4095, f.freed&^4095; page > from {
		if err := punch(fd, from, page-from); err != nil {
			return
		}
		f.freed = page
	}
	if exact && f.done > f.freed {
		if err := zero(f.f, f.freed, f.done); err == nil {
			f.freed = f.done
		}
	}
}

func punch(fd int, off, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// zero overwrites [from, to) of f with zeros. The range is below the end of
// the file, so it never overlaps nginx's appends.
func zero(w *os.File, from, to int64) error {
	var z [4096]byte
	for from < to {
		n := min(int64(len(z)), to-from)
		if _, err := w.WriteAt(z[:n], from); err != nil {
			return fmt.Errorf("zeroing %s: %w", w.Name(), err)
		}
		from += n
	}
	return nil
}

// checkReplaced switches to a new file at path (after rename-style rotation
// or re-creation); the old one is drained until idle.
func (s *spool) checkReplaced() {
	var st unix.Stat_t
	if err := unix.Stat(s.path, &st); err != nil || st.Ino == s.cur.ino {
		return
	}
	nf, err := openSpoolFile(s.path)
	if err != nil {
		return
	}
	if s.old != nil {
		s.free(s.old, true)
		s.old.f.Close()
	}
	nf.lastNew = s.now()
	s.narrowed(nf)
	s.old, s.cur = s.cur, nf
	s.reopens++
}

func (s *spool) narrowed(f *spoolFile) {
	if f.modeWas != 0 && s.onNarrow != nil {
		s.onNarrow(f.f.Name(), f.modeWas, ownerOnly(f.modeWas), f.narrowErr)
	}
}

// backlog is how many bytes nginx has written that are not read yet. It
// opens the file if it is not open yet: an agent started on a full spool
// looks at it before its first read.
func (s *spool) backlog() int64 {
	if s.cur == nil {
		s.open()
	}
	var n int64
	for _, f := range []*spoolFile{s.cur, s.old} {
		if f == nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.f.Fd()), &st) == nil && st.Size > f.off {
			n += st.Size - f.off
		}
	}
	return n
}

// close frees everything processed, exactly, and closes the files.
func (s *spool) close() {
	for _, f := range []*spoolFile{s.old, s.cur} {
		if f != nil {
			s.free(f, true)
			f.f.Close()
		}
	}
	s.old, s.cur = nil, nil
}

// full reports whether the filesystem of the spool has less than min bytes
// available.
func spoolFull(dir string, min uint64) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Bavail*uint64(st.Bsize) < min
}
