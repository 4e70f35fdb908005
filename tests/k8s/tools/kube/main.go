// Command kube is kube-apiserver, kube-controller-manager, kube-scheduler
// and the kubelet of k8s.io/kubernetes in one binary, chosen by the name it
// is run as (the cache holds one symbolic link per component), the way
// Kubernetes' own hyperkube was. The four share all but a few hundred of
// their ~2 500 packages; one binary is linked once instead of four times,
// which is what a cold build of the cluster test spends its last minutes on.
// Each branch is what the component's own main in k8s.io/kubernetes/cmd does.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	_ "time/tzdata"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
}

func main() {
	name := filepath.Base(os.Args[0])
	command, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube: run as one of kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (a link named so), not %q\n", name)
		os.Exit(2)
	}
	os.Exit(cli.Run(command()))
}
