package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// pinner is a pinned object: a map or the link.
type pinner interface {
	Pin(string) error
	Unpin() error
}

// pinned returns the objects the program pins, by pin name: the link and
// every map of mapPins the program has (found by their ebpf tags, so a map
// added to the program is covered once it is in mapPins).
func (p *Program) pinned() map[string]pinner {
	out := map[string]pinner{}
	if p.link != nil {
		out[PinLink] = p.link
	}
	v := reflect.ValueOf(p.objs.SockopsMaps)
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if ok && m != nil && slices.Contains(mapPins, name) {
			out[name] = m
		}
	}
	return out
}

// Repin pins again, in the configured pin directory, every object whose pin
// is gone: when the directory or pins in it were removed while the agent
// runs (by hand, a cleanup script, a bpffs remounted), readers (`ipng-stats
// conns`, the library, a restarted agent taking over) would otherwise find
// nothing, and a restart would attach a new program with empty maps. It
// re-creates the directory (ensurePinDir) and returns the names it
// re-pinned; an error means the pins stay missing.
func (p *Program) Repin() ([]string, error) {
	objs := p.pinned()
	var missing []string
	for name := range objs {
		if _, err := os.Lstat(filepath.Join(p.cfg.PinDir, name)); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, name)
		} else if err != nil {
			return nil, fmt.Errorf("checking pin %s: %w", name, err)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	slices.Sort(missing)
	if err := ensurePinDir(p.cfg.PinDir); err != nil {
		return nil, fmt.Errorf("re-creating the removed pin directory: %w", err)
	}
	for _, name := range missing {
		path := filepath.Join(p.cfg.PinDir, name)
		// Unpin forgets the old path (it is gone): Pin to the same path is
		// a no-op otherwise.
		if err := objs[name].Unpin(); err != nil {
			return nil, fmt.Errorf("re-pinning %s: %w", name, err)
		}
		if err := objs[name].Pin(path); err != nil {
			return nil, fmt.Errorf("re-pinning %s: %w", name, err)
		}
		mode := PinMapMode
		if name == PinLink {
			mode = PinLinkMode
		}
		if err := os.Chmod(path, mode); err != nil {
			return nil, fmt.Errorf("setting the mode of re-pinned %s: %w", name, err)
		}
	}
	return missing, nil
}

// PinCheckInterval is how often the agent checks that its pins are still
// there (a few lstat calls) on top of the pin directory's inotify watch:
// it catches what inotify cannot see, e.g. a bpf filesystem mounted over
// the directory's parent. Without the watch (inotify unavailable) the
// check runs every PinPollInterval instead.
const PinCheckInterval = 30 * time.Second

// PinPollInterval is the check interval when the pin directory cannot be
// watched.
const PinPollInterval = time.Second

// WatchPins calls Repin whenever something is removed from the pin
// directory or the directory itself goes (inotify), and every interval,
// until ctx is done. An idle agent is not woken to look at pins nobody
// touched. It returns an error (which stops the agent, so that its
// supervisor restarts it) when a removed pin cannot be pinned again:
// running on unpinned would leave the program invisible to every reader
// and to the next agent.
func (p *Program) WatchPins(ctx context.Context, interval time.Duration) error {
	w, err := newDirWatch(p.cfg.PinDir)
	var wake <-chan struct{}
	if err == nil {
		defer w.close()
		wake = w.events
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	warned := false
	for {
		// Check once the watch is set (first round: what was removed
		// before it), and watch again before each check (the directory
		// may be new); check again when the watch could only be set
		// after the check re-created the directory: what is removed from
		// then on wakes the loop, nothing is missed in between.
		watched := false
		for range 3 {
			if w != nil {
				if err = w.watch(); err == nil {
					watched = true
				}
			}
			if err := p.repinLogged(); err != nil {
				return err
			}
			if watched {
				break
			}
		}
		next := interval
		if !watched {
			if !warned {
				p.log.Warn("cannot watch the pin directory, checking it every second", "pin_dir", p.cfg.PinDir, "err", err)
				warned = true
			}
			next = min(interval, PinPollInterval)
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
	}
}

// repinRetries and repinRetryDelay bound how long repinLogged keeps pinning
// again while the pins it has just made vanish (see there).
const (
	repinRetries    = 50
	repinRetryDelay = 20 * time.Millisecond
)

// repinLogged is Repin, logged and counted for WatchPins. The watch wakes
// on the first removal of an `rm -r` of the directory, so a re-pin can run
// while the removal goes on and lose what it just pinned (the pin or its
// chmod then fails with ENOENT); it pins again until the removal is over,
// for at most repinRetries × repinRetryDelay. Any other error, or pins
// that keep vanishing past that, stop the agent.
func (p *Program) repinLogged() error {
	names, err := p.Repin()
	for range repinRetries {
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(repinRetryDelay)
		names, err = p.Repin()
	}
	if err != nil {
		return fmt.Errorf("pins in %s were removed while the agent runs and cannot be restored: %w (restart the agent)", p.cfg.PinDir, err)
	}
	if len(names) > 0 {
		p.repins.Add(1)
		p.log.Warn("pins were removed while the agent runs: pinned again", "pin_dir", p.cfg.PinDir, "pins", names)
	}
	return nil
}

// Repins is how many times WatchPins found pins removed and pinned them again.
func (p *Program) Repins() uint64 { return p.repins.Load() }
