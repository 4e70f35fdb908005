package loader

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// dirWatch wakes WatchPins when something is removed from the pin
// directory, or the directory itself is removed, renamed or unmounted
// (inotify), so that the agent does not have to look every second.
type dirWatch struct {
	dir    string
	f      *os.File // the inotify descriptor, non-blocking: read through the runtime's poller
	events chan struct{}
	done   chan struct{}
	once   sync.Once
}

// pinDirEvents are the inotify events after which the pins are checked.
// IN_IGNORED and IN_UNMOUNT come whatever the mask.
const pinDirEvents = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// newDirWatch watches dir; watch must be called once the directory exists.
func newDirWatch(dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &dirWatch{dir: dir, f: os.NewFile(uintptr(fd), "inotify"), events: make(chan struct{}, 1), done: make(chan struct{})}
	go w.read()
	return w, nil
}

// watch (re)adds the directory's watch: after the directory was removed and
// made again, the old watch is gone with the old directory. Adding it to a
// directory already watched keeps the watch.
func (w *dirWatch) watch() error {
	sc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := sc.Control(func(fd uintptr) {
		_, werr = unix.InotifyAddWatch(int(fd), w.dir, pinDirEvents)
	}); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("watching %s: %w", w.dir, werr)
	}
	return nil
}

// read turns every read of the descriptor (one or more events) into one
// wakeup on events; wakeups are not queued beyond one, WatchPins checks
// everything each time.
func (w *dirWatch) read() {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		_, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// Queue overflow or a short buffer cannot happen with
			// this mask and buffer; anything else: stop waking,
			// WatchPins still checks every interval.
			return
		}
		select {
		case w.events <- struct{}{}:
		default:
		}
	}
}

// close stops the reader and closes the descriptor.
func (w *dirWatch) close() {
	w.once.Do(func() {
		w.f.Close()
		<-w.done
	})
}
