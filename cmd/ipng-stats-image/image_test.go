package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func buildIn(t *testing.T, dir string) (options, string) {
	t.Helper()
	bin := filepath.Join(dir, "ipng-stats")
	if err := os.WriteFile(bin, []byte("#!/bin/false\nnot really a binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{Binary: bin, Layout: filepath.Join(dir, "layout"), Archive: filepath.Join(dir, "image.tar"),
		Name: "ipng-stats", Tag: "1.2.3", Version: "1.2.3-4-gabc123", Revision: "abc123", Arch: "amd64", Created: time.Unix(1700000000, 0).UTC()}
	digest, err := build(o)
	if err != nil {
		t.Fatal(err)
	}
	return o, digest.String()
}

// The same inputs give the same image and the same archive, byte for byte,
// whenever and wherever they are built.
func TestImageReproducible(t *testing.T) {
	o1, d1 := buildIn(t, t.TempDir())
	o2, d2 := buildIn(t, t.TempDir())
	if d1 != d2 {
		t.Errorf("digests differ: %s, %s", d1, d2)
	}
	a1, _ := os.ReadFile(o1.Archive)
	a2, _ := os.ReadFile(o2.Archive)
	if len(a1) == 0 || !bytes.Equal(a1, a2) {
		t.Errorf("archives differ (%d and %d bytes)", len(a1), len(a2))
	}
}

// What a container engine reads: the tag (the chart's appVersion, which
// the manifests name; the build's own version is a label), the entrypoint,
// the labels, and the binary at /usr/bin/ipng-stats, executable.
func TestImageContent(t *testing.T) {
	o, digest := buildIn(t, t.TempDir())
	idx, err := layout.ImageIndexFromPath(o.Layout)
	if err != nil {
		t.Fatal(err)
	}
	man, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Manifests) != 1 || man.Manifests[0].Digest.String() != digest {
		t.Fatalf("index %+v, want one manifest %s", man.Manifests, digest)
	}
	if got := man.Manifests[0].Annotations["io.containerd.image.name"]; got != "docker.io/library/ipng-stats:1.2.3" {
		t.Errorf("containerd image name %q", got)
	}
	if got := man.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "1.2.3" {
		t.Errorf("OCI ref name %q", got)
	}
	img, err := idx.Image(man.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Entrypoint[0] != "/usr/bin/ipng-stats" || cfg.Config.Cmd[0] != "agent" || cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg.Config)
	}
	for k, want := range map[string]string{"org.opencontainers.image.version": "1.2.3-4-gabc123", "org.opencontainers.image.revision": "abc123",
		"org.opencontainers.image.created": "2023-11-14T22:13:20Z", "org.opencontainers.image.title": "ipng-stats"} {
		if got := cfg.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == "usr/bin/ipng-stats" {
			body, _ := io.ReadAll(tr)
			found = hdr.Mode == 0o755 && bytes.HasPrefix(body, []byte("#!/bin/false"))
		}
	}
	if !found {
		t.Error("layer lacks an executable usr/bin/ipng-stats with the binary's content")
	}
}
