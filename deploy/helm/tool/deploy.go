package main

import (
	"fmt"
	"log"
	"os"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// deploy is `helm install` or `helm upgrade` of the chart on the cluster of
// kubeconfig, with Helm's Go API: what an operator's helm command does, in
// a program the cluster test can build without a helm binary. The release
// is recorded in the namespace (Secrets, Helm's default driver), so an
// upgrade finds what the install left.
func deploy(mode, dir, kubeconfig, valuesFile string, wait time.Duration) (*release.Release, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", dir, err)
	}
	values := map[string]any{}
	if valuesFile != "" {
		values, err = chartutil.ReadValuesFile(valuesFile)
		if err != nil {
			return nil, fmt.Errorf("reading values %s: %w", valuesFile, err)
		}
	}
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	ns := namespace
	flags.Namespace = &ns
	cfg := new(action.Configuration)
	logf := log.New(os.Stderr, "helm: ", 0).Printf
	if err := cfg.Init(flags, namespace, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	switch mode {
	case "install":
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace = releaseName, namespace
		// The namespace comes first, with its Pod Security labels
		// (docs/user-guide.md): not created here.
		in.CreateNamespace = false
		in.Wait, in.Timeout = wait > 0, wait
		return in.Run(ch, values)
	case "upgrade":
		up := action.NewUpgrade(cfg)
		up.Namespace = namespace
		up.Wait, up.Timeout = wait > 0, wait
		// The values given are the whole configuration, as with
		// `helm upgrade -f values.yaml` (no --reuse-values).
		return up.Run(releaseName, ch, values)
	}
	return nil, fmt.Errorf("unknown mode %q (install, upgrade)", mode)
}
