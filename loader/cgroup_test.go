package loader

import (
	"strings"
	"testing"
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

func TestCounterNames(t *testing.T) {
	seen := map[string]bool{}
	for i, n := range CounterNames {
		if n == "" || seen[n] {
			t.Errorf("counter %d has no unique name (%q): name it in CounterNames", i, n)
		}
		seen[n] = true
	}
}
