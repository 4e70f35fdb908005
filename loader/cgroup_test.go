package loader

import (
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
)

func TestCgroup2MountFrom(t *testing.T) {
	tests := []struct {
		name, mountinfo, want, wantErr string
	}{
		{
			name: "unified",
			mountinfo: `22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - cgroup2 cgroup2 rw,nsdelegate`,
			want: "/sys/fs/cgroup",
		},
		{
			name: "hybrid",
			mountinfo: `30 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd`,
			want: "/sys/fs/cgroup/unified",
		},
		{
			name:      "optional fields before the separator",
			mountinfo: `31 30 0:27 / /cg rw shared:10 master:3 propagate_from:2 - cgroup2 none rw`,
			want:      "/cg",
		},
		{
			name:      "escaped space",
			mountinfo: `31 30 0:27 / /my\040cgroup rw - cgroup2 none rw`,
			want:      "/my cgroup",
		},
		{
			name: "a subtree bind mount before the hierarchy",
			mountinfo: `89 56 0:37 /k8s /tmp/x/host-cgroup rw - cgroup2 cgroup2 rw
25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw`,
			want: "/sys/fs/cgroup",
		},
		{
			name:      "only a subtree",
			mountinfo: `89 56 0:37 /k8s /tmp/x/host-cgroup rw - cgroup2 cgroup2 rw`,
			want:      "/tmp/x/host-cgroup",
		},
		{
			name:      "cgroup v1 only",
			mountinfo: `32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu`,
			wantErr:   "no cgroup2 filesystem is mounted",
		},
		{name: "empty", mountinfo: "", wantErr: "no cgroup2"},
		{name: "garbage", mountinfo: "not a mountinfo line\n - \n", wantErr: "no cgroup2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2MountFrom(strings.NewReader(tt.mountinfo))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCgroup2MountBelow(t *testing.T) {
	const hybrid = `30 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
40 1 0:50 / /host/cgroup ro - tmpfs tmpfs ro
41 40 0:27 /kubepods /host/cgroup/unified ro - cgroup2 cgroup2 rw
42 41 0:27 /kubepods/x /host/cgroup/unified/x ro - cgroup2 cgroup2 rw
43 40 0:28 / /host/cgroup/memory ro - cgroup cgroup rw,memory`
	const v2 = `25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
50 1 0:23 / /host/cgroup ro - cgroup2 cgroup2 rw`
	tests := []struct {
		name, mountinfo, dir, want, wantErr string
	}{
		{name: "host hybrid layout", mountinfo: hybrid, dir: "/sys/fs/cgroup", want: "/sys/fs/cgroup/unified"},
		{name: "hybrid layout mounted whole in a container", mountinfo: hybrid, dir: "/host/cgroup/", want: "/host/cgroup/unified"},
		{name: "cgroup-v2 layout in a container", mountinfo: v2, dir: "/host/cgroup", want: "/host/cgroup"},
		{name: "a prefix of a name is no parent", mountinfo: hybrid, dir: "/host/cg", wantErr: "no cgroup2 mount below it (sock_ops attaches to cgroup v2 only; cgroup2 is mounted at /sys/fs/cgroup/unified, /host/cgroup/unified"},
		{name: "cgroup v1 only", mountinfo: `32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu`, dir: "/sys/fs/cgroup", wantErr: "no cgroup2 filesystem is mounted"},
		{name: "root: the shallowest", mountinfo: v2, dir: "/", want: "/host/cgroup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2MountBelow(strings.NewReader(tt.mountinfo), tt.dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// On this host (hybrid layout, cgroup2 at /sys/fs/cgroup/unified) or a
// cgroup-v2 one, /sys/fs/cgroup stands for the cgroup2 mount.
func TestResolveCgroupFindsTheCgroup2Mount(t *testing.T) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		testenv.Skip(t, "no cgroup2 mount: "+err.Error())
	}
	got, err := ResolveCgroup(mnt)
	if err != nil || got != mnt {
		t.Fatalf("ResolveCgroup(%q) = %q, %v; want %q", mnt, got, err, mnt)
	}
	if mnt != "/sys/fs/cgroup" && strings.HasPrefix(mnt, "/sys/fs/cgroup/") {
		got, err := ResolveCgroup("/sys/fs/cgroup")
		if err != nil || got != mnt {
			t.Fatalf("hybrid host: ResolveCgroup(/sys/fs/cgroup) = %q, %v; want %q", got, err, mnt)
		}
	}
	if _, err := ResolveCgroup("/proc"); err == nil || !strings.Contains(err.Error(), "no cgroup2 mount below it") {
		t.Fatalf("ResolveCgroup(/proc) = %v; want no cgroup2 mount below it", err)
	}
}

func TestCounterNames(t *testing.T) {
	seen := map[string]bool{}
	for i, n := range CounterNames {
		if n == "" || seen[n] {
			t.Errorf("counter %d has no unique name (%q): name it in CounterNames", i, n)
		}
		seen[n] = true
	}
}
