package main

import (
	"errors"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// Release name and namespace of the plain manifest.
const (
	releaseName = "ipng-stats"
	namespace   = "ipng-stats"
)

// lintChart runs `helm lint --strict`: a warning fails as an error does.
func lintChart(dir string, values map[string]any) error {
	linter := lint.All(dir, values, namespace, false)
	var problems []string
	for _, m := range linter.Messages {
		if m.Severity >= support.WarningSev {
			problems = append(problems, m.Error())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("helm lint %s:\n%s", dir, strings.Join(problems, "\n"))
	}
	return nil
}

// render is `helm template` of the chart with the given values.
func render(dir string, values map[string]any) (string, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("loading chart %s: %w", dir, err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = releaseName, namespace
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.0", Major: "1", Minor: "37"}
	rel, err := install.Run(ch, values)
	if err != nil {
		return "", fmt.Errorf("rendering chart %s: %w", dir, err)
	}
	if strings.TrimSpace(rel.Manifest) == "" {
		return "", errors.New("rendering chart: empty manifest")
	}
	return rel.Manifest, nil
}

// The namespace of the plain manifest. Helm users create it themselves
// (--create-namespace) and label it the same way.
const namespaceManifest = `# ipng-stats as a node agent, rendered from the Helm chart deploy/helm/ipng-stats
# with its default values by deploy/helm/tool (make chart); do not edit: edit
# the chart, or install it with your values (docs/user-guide.md).
#
#   kubectl apply -f deploy/kubernetes/ipng-stats.yaml
#
# The pod uses the host network, host paths and capabilities beyond the
# default set: Pod Security admits it only at the "privileged" level, so the
# namespace says so (the "baseline" level rejects hostNetwork and hostPath).
apiVersion: v1
kind: Namespace
metadata:
  name: ipng-stats
  labels:
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/warn: privileged
    pod-security.kubernetes.io/audit: privileged
`

// plainManifest is the namespace and the chart rendered with its defaults.
func plainManifest(dir string) (string, error) {
	m, err := render(dir, nil)
	if err != nil {
		return "", err
	}
	return namespaceManifest + m, nil
}
