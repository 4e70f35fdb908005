package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type options struct {
	Binary, Layout, Archive string
	Name, Tag, Version      string
	Revision                string
	Arch                    string
	Created                 time.Time
}

// tag is the image's tag: Tag, else the version.
func (o options) tag() string {
	if o.Tag != "" {
		return o.Tag
	}
	return o.Version
}

// Where the binary lives in the image, and what the image runs.
const binPath = "usr/bin/ipng-stats"

// build writes the image layout (and archive) and returns the manifest digest.
func build(o options) (v1.Hash, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading the binary: %w", err)
	}
	img, err := image(bin, o)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image digest: %w", err)
	}
	if err := os.RemoveAll(o.Layout); err != nil {
		return v1.Hash{}, fmt.Errorf("replacing %s: %w", o.Layout, err)
	}
	p, err := layout.Write(o.Layout, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("writing the layout %s: %w", o.Layout, err)
	}
	ref := o.Name + ":" + o.tag()
	err = p.AppendImage(img, layout.WithAnnotations(map[string]string{
		// The tag, for tools that read OCI layouts (podman, skopeo), and
		// the full name containerd's `ctr images import` gives the image.
		"org.opencontainers.image.ref.name": o.tag(),
		"io.containerd.image.name":          "docker.io/library/" + ref,
	}))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("writing the image to %s: %w", o.Layout, err)
	}
	if o.Archive != "" {
		if err := archive(o.Layout, o.Archive, o.Created); err != nil {
			return v1.Hash{}, err
		}
	}
	return digest, nil
}

// image is the binary as the one layer of an image without a base.
func image(bin []byte, o options) (v1.Image, error) {
	layerTar, err := rootfs(bin, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "ipng-stats",
		"org.opencontainers.image.description": "per-interface, per-VIP HTTP traffic accounting agent (eBPF sock_ops)",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.licenses":    "Apache-2.0 AND GPL-2.0-only",
	}
	cfg := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: o.Created},
		Config: v1.Config{
			Entrypoint:   []string{"/" + binPath},
			Cmd:          []string{"agent"},
			ExposedPorts: map[string]struct{}{"9113/tcp": {}},
			Labels:       labels,
			// Root inside the container: Kubernetes grants added
			// capabilities to uid 0 only (no ambient capabilities), and the
			// agent needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN. The chart
			// drops every other one.
			User: "0:0",
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "ipng-stats-image: /" + binPath},
	})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}

// rootfs is the layer: the directories to the binary and the binary.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"usr/", "usr/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: binPath, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// archive tars the layout directory with sorted names, fixed times and
// owners, so that the same layout gives the same bytes.
func archive(dir, file string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the layout: %w", err)
	}
	sort.Strings(paths)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		if err := addFile(tw, dir, p, mtime); err != nil {
			return fmt.Errorf("archive %s: %w", file, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", file, err)
	}
	return f.Close()
}

func addFile(tw *tar.Writer, dir, p string, mtime time.Time) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
	if fi.IsDir() {
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
		return tw.WriteHeader(hdr)
	}
	hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
