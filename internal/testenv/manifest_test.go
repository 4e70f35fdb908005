package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestManifest(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.yaml")
	os.WriteFile(file, []byte("kind: ConfigMap\ndata: {a: x}\n---\n# empty\n---\nkind: DaemonSet\nspec: {n: 1}\n---\nkind: ConfigMap\ndata: {a: y}\n"), 0o644)
	var got []string
	for _, n := range Manifest(t, file, "ConfigMap") {
		var doc struct{ Data map[string]string }
		if err := n.Decode(&doc); err != nil {
			t.Fatal(err)
		}
		got = append(got, doc.Data["a"])
	}
	if len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Errorf("ConfigMaps %q, want [x y] in file order", got)
	}
	var ds struct{ Spec struct{ N int } }
	ManifestObject(t, file, "DaemonSet", &ds)
	if ds.Spec.N != 1 {
		t.Errorf("DaemonSet spec.n = %d, want 1", ds.Spec.N)
	}
	if n := len(Manifest(t, file, "Service")); n != 0 {
		t.Errorf("%d Services, want none", n)
	}
}
