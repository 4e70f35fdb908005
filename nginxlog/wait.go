package nginxlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// idleWake bounds how long the ingest sleeps while nginx writes nothing:
// the maintenance (spool full, backlog, a rotated-away file closed after
// drainIdle) and a log the directory watch cannot see (a symlink into
// another directory) wait at most this long.
const idleWake = time.Second

// spoolWatch wakes the ingest when something changes in the spool
// directory (inotify): nginx wrote to the log, or the log was created,
// renamed, removed or truncated. An idle ingest then sleeps until nginx
// writes instead of looking every poll_interval. The descriptor is waited
// on only while the ingest has nothing to read, by the ingest goroutine
// itself (poll(2)), never through the runtime's poller: while the ingest
// reads, nginx's writes queue in the kernel, merged, and wake nobody.
type spoolWatch struct {
	ino  int // inotify
	stop int // eventfd, written when the context is done
	buf  []byte
}

// spoolEvents are the changes that wake the ingest.
const spoolEvents = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

func newSpoolWatch(dir string) (*spoolWatch, error) {
	ino, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(ino, dir, spoolEvents); err != nil {
		unix.Close(ino)
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ino)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &spoolWatch{ino: ino, stop: stop, buf: make([]byte, 4096)}, nil
}

// wait returns once the spool directory changed since the last wait, after
// at most d, or when ctx is done (the caller looks at ctx).
func (w *spoolWatch) wait(ctx context.Context, d time.Duration) {
	stop := context.AfterFunc(ctx, func() {
		one := [8]byte{1}
		unix.Write(w.stop, one[:])
	})
	defer stop()
	fds := []unix.PollFd{{Fd: int32(w.ino), Events: unix.POLLIN}, {Fd: int32(w.stop), Events: unix.POLLIN}}
	if ctx.Err() == nil {
		// EINTR (a signal, SIGSTOP/SIGCONT) is a wakeup like any other.
		unix.Poll(fds, int(d.Milliseconds()))
	}
	// Take every queued event: they all say "look again", once.
	for {
		if _, err := unix.Read(w.ino, w.buf); err != nil {
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}
}

func (w *spoolWatch) close() {
	unix.Close(w.ino)
	unix.Close(w.stop)
}
