package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Paths relative to this package's directory, where go test runs.
const (
	kubeDir    = "../kubernetes"
	alertsFile = "../prometheus/alerts.yaml"
	designFile = "../../../shared/DESIGN.md"
)

// Custom resources have no type in k8s.io/api; these hold the fields their
// operators read, so that strict decoding still catches a misspelt field.

// ruleGroups is the body of a Prometheus rule file and of a PrometheusRule's spec.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleGroups `json:"spec"`
}

type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, as far as the
// example uses it.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// rendered is one kustomization's output, every object decoded.
type rendered struct {
	dir     string
	yaml    []byte
	objects int

	namespaces    map[string]*corev1.Namespace
	configMaps    map[string]*corev1.ConfigMap
	secrets       map[string]*corev1.Secret
	services      map[string]*corev1.Service
	deployments   map[string]*appsv1.Deployment
	statefulSets  map[string]*appsv1.StatefulSet
	podMonitors   map[string]*podMonitor
	rules         map[string]*prometheusRule
	scaledObjects map[string]*scaledObject
	triggerAuths  map[string]*triggerAuthentication
}

// render builds dir with krusty over the real filesystem, as
// `kustomize build dir` does, and decodes every object strictly into its
// type. An object of a kind this package does not know fails the test.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := &rendered{
		dir: dir, yaml: out,
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		podMonitors: map[string]*podMonitor{}, rules: map[string]*prometheusRule{},
		scaledObjects: map[string]*scaledObject{}, triggerAuths: map[string]*triggerAuthentication{},
	}
	for _, res := range m.Resources() {
		r.objects++
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, res.GetKind(), res.GetName(), err)
		}
		where := fmt.Sprintf("%s: %s %s/%s", dir, res.GetKind(), res.GetNamespace(), res.GetName())
		name := res.GetName()
		switch gvk := res.GetApiVersion() + " " + res.GetKind(); gvk {
		case "v1 Namespace":
			r.namespaces[name] = strict[corev1.Namespace](t, where, y)
		case "v1 ConfigMap":
			r.configMaps[name] = strict[corev1.ConfigMap](t, where, y)
		case "v1 Secret":
			r.secrets[name] = strict[corev1.Secret](t, where, y)
		case "v1 Service":
			r.services[name] = strict[corev1.Service](t, where, y)
		case "apps/v1 Deployment":
			r.deployments[name] = strict[appsv1.Deployment](t, where, y)
		case "apps/v1 StatefulSet":
			r.statefulSets[name] = strict[appsv1.StatefulSet](t, where, y)
		case "monitoring.coreos.com/v1 PodMonitor":
			r.podMonitors[name] = strict[podMonitor](t, where, y)
		case "monitoring.coreos.com/v1 PrometheusRule":
			r.rules[name] = strict[prometheusRule](t, where, y)
		case "keda.sh/v1alpha1 ScaledObject":
			r.scaledObjects[name] = strict[scaledObject](t, where, y)
		case "keda.sh/v1alpha1 TriggerAuthentication":
			r.triggerAuths[name] = strict[triggerAuthentication](t, where, y)
		default:
			t.Errorf("%s: no type known for %s", where, gvk)
		}
	}
	t.Logf("kustomize build %s: %d bytes, %d objects", dir, len(out), r.objects)
	return r
}

// strict decodes one object the way the API server's strict field
// validation does: duplicate YAML keys, unknown fields and fields that match
// only case-insensitively (readOnlyRootFileSystem) are errors.
func strict[T any](t *testing.T, where string, y []byte) *T {
	t.Helper()
	v := new(T)
	if err := decodeStrict(y, v); err != nil {
		t.Errorf("%s: strict decoding: %v", where, err)
	}
	return v
}

func decodeStrict(y []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// readObjects decodes a multi-document YAML file strictly into T, one per
// document (comment-only documents skipped).
func readObjects[T any](t *testing.T, path string) []*T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*T
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		content := false
		for line := range strings.Lines(doc) {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				content = true
			}
		}
		if content {
			out = append(out, strict[T](t, fmt.Sprintf("%s document %d", path, i+1), []byte(doc)))
		}
	}
	return out
}

// designVars returns every FERRY_ variable of the contract's Configuration
// table (the first column of each row).
func designVars(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(designFile)
	if err != nil {
		t.Fatalf("the contract must sit beside the repository (../shared/DESIGN.md): %v", err)
	}
	_, section, ok := bytes.Cut(b, []byte("\n## Configuration\n"))
	if !ok {
		t.Fatalf("%s: no Configuration section", designFile)
	}
	if end := bytes.Index(section, []byte("\n## ")); end >= 0 {
		section = section[:end]
	}
	vars := map[string]bool{}
	name := regexp.MustCompile(`\bFERRY_[A-Z0-9_]*[A-Z0-9]\b`)
	for line := range strings.Lines(string(section)) {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "|") {
			continue
		}
		for _, v := range name.FindAllString(cells[1], -1) {
			vars[v] = true
		}
	}
	if len(vars) < 30 || !vars["FERRY_APP_ID"] || !vars["FERRY_REDIS_PASSWORD_FILE"] {
		t.Fatalf("%s: read only %d FERRY_ variables from the Configuration table: %v", designFile, len(vars), vars)
	}
	return vars
}

// TestStrictDecoding: the decoder the tests rely on refuses what the API
// server's strict field validation refuses.
func TestStrictDecoding(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n" +
			"      initContainers:\n        - name: ferry\n          restartPolicyy: Always\n",
		"field in the wrong case": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n" +
			"      containers:\n        - name: ferry\n          securityContext: {readOnlyRootFileSystem: true}\n",
		"duplicate key": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {A: a}\ndata: {B: b}\n",
	} {
		if err := decodeStrict([]byte(doc), new(appsv1.Deployment)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	so := "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  scaleTargetRef: {name: x}\n" +
		"  triggers:\n    - type: redis-streams\n      metdata: {stream: s}\n"
	if err := decodeStrict([]byte(so), new(scaledObject)); err == nil {
		t.Error("a ScaledObject with a misspelt field decoded without error")
	}
	good := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 2\n"
	if err := decodeStrict([]byte(good), new(appsv1.Deployment)); err != nil {
		t.Errorf("a valid Deployment: %v", err)
	}
}
