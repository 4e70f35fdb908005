// Command tool lints the ipng-stats chart with Helm's own linter and renders
// it into the plain manifest, deploy/kubernetes/ipng-stats.yaml, with Helm's
// Go API (no helm binary). `make chart` writes the manifest; `make
// check-generated` fails when the committed one is stale.
//
//	go run . -chart ../ipng-stats -out ../../kubernetes/ipng-stats.yaml
//
// With -deploy it installs or upgrades the chart as release ipng-stats in
// namespace ipng-stats of a cluster, as `helm install`/`helm upgrade -f`
// would (the cluster test, tests/k8s, does so):
//
//	go run . -chart ../ipng-stats -deploy install -kubeconfig FILE -values FILE
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	chartDir := flag.String("chart", "../ipng-stats", "chart `DIR`")
	out := flag.String("out", "../../kubernetes/ipng-stats.yaml", "manifest `FILE` to write; \"-\": stdout")
	mode := flag.String("deploy", "", "install or upgrade the release on the cluster of -kubeconfig instead of rendering")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig `FILE` of the cluster (-deploy)")
	values := flag.String("values", "", "values `FILE` (-deploy)")
	wait := flag.Duration("wait", 0, "with -deploy, wait up to this long for the pods to be ready (0: do not wait)")
	flag.Parse()
	if *mode != "" {
		if *kubeconfig == "" {
			fmt.Fprintln(os.Stderr, "chart: -deploy needs -kubeconfig")
			os.Exit(2)
		}
		rel, err := deploy(*mode, *chartDir, *kubeconfig, *values, *wait)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chart: %s: %v\n", *mode, err)
			os.Exit(1)
		}
		fmt.Printf("release %s revision %d in namespace %s: %s\n", rel.Name, rel.Version, rel.Namespace, rel.Info.Status)
		return
	}
	if err := lintChart(*chartDir, nil); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
	manifest, err := plainManifest(*chartDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
	if *out == "-" {
		fmt.Print(manifest)
		return
	}
	if err := os.WriteFile(*out, []byte(manifest), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
}
