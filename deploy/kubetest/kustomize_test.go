package kubetest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// What the component promises; the tests hold the manifests to it.
const (
	injectLabel       = "ferry.dev/inject"
	sidecarLabel      = "ferry.dev/sidecar"
	subscriptionsNote = "ferry.dev/subscriptions"
	appNameLabel      = "app.kubernetes.io/name"
	adminPortName     = "ferry-admin"
	adminPort         = 7401
	outboxVolume      = "ferry-outbox"
	secretVolume      = "ferry-secrets"
	secretName        = "ferry"
	secretDir         = "/var/run/secrets/ferry"
	// uid of the distroless :nonroot user; numeric because the image's USER
	// is a name, which runAsNonRoot cannot verify.
	nonrootUID = 65532
)

// secretFiles maps each _FILE variable (DESIGN.md, Configuration) to the
// Secret key mounted for it.
var secretFiles = map[string]string{
	"FERRY_API_TOKEN_FILE":      "api-token",
	"FERRY_ADMIN_TOKEN_FILE":    "admin-token",
	"FERRY_APP_TOKEN_FILE":      "app-token",
	"FERRY_REDIS_PASSWORD_FILE": "redis-password",
}

// secretVars must never be set in the environment: they come as files.
var secretVars = []string{"FERRY_API_TOKEN", "FERRY_ADMIN_TOKEN", "FERRY_APP_TOKEN"}

// ferryEnv is the sidecar's effective environment: its ConfigMap (envFrom)
// overlaid by its explicit env, as the kubelet builds it.
type ferryEnv struct {
	literal map[string]string // value known from the manifests
	field   map[string]string // name → downward-API fieldPath
	source  map[string]string // name → "configmap" or "env"
	order   []string          // every name, configmap first
	envVars map[string]corev1.EnvVar
}

func resolveEnv(t *testing.T, where string, r *rendered, c *corev1.Container) ferryEnv {
	t.Helper()
	e := ferryEnv{literal: map[string]string{}, field: map[string]string{}, source: map[string]string{}, envVars: map[string]corev1.EnvVar{}}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || from.Prefix != "" || from.SecretRef != nil {
			t.Errorf("%s: envFrom %+v: want a plain configMapRef (secrets come as files)", where, from)
			continue
		}
		cm, ok := r.configMaps[from.ConfigMapRef.Name]
		if !ok {
			t.Errorf("%s: envFrom names ConfigMap %q, which the build does not contain", where, from.ConfigMapRef.Name)
			continue
		}
		if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
			t.Errorf("%s: the ConfigMap %s is optional: a missing one must keep the pod from starting", where, cm.Name)
		}
		if len(cm.BinaryData) > 0 {
			t.Errorf("%s: ConfigMap %s has binaryData", where, cm.Name)
		}
		for k, v := range cm.Data {
			e.literal[k], e.source[k] = v, "configmap"
			e.order = append(e.order, k)
		}
	}
	for _, ev := range c.Env {
		if _, dup := e.envVars[ev.Name]; dup {
			t.Errorf("%s: env %s set twice", where, ev.Name)
		}
		e.envVars[ev.Name] = ev
		if e.source[ev.Name] == "configmap" {
			t.Errorf("%s: %s both in the ConfigMap and in env: keep one place", where, ev.Name)
		}
		delete(e.literal, ev.Name)
		e.source[ev.Name] = "env"
		e.order = append(e.order, ev.Name)
		switch {
		case ev.ValueFrom == nil:
			e.literal[ev.Name] = ev.Value
		case ev.ValueFrom.FieldRef != nil:
			e.field[ev.Name] = ev.ValueFrom.FieldRef.FieldPath
		default:
			t.Errorf("%s: env %s from %+v: the sidecar takes secrets as files and the rest from its ConfigMap or the downward API", where, ev.Name, ev.ValueFrom)
		}
	}
	return e
}

// findContainer returns the container called name in list, or nil.
func findContainer(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func findVolume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// portNumber resolves a probe's port (a number or a container port's name).
func portNumber(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// checkSidecar checks everything the component promises on one Deployment
// and returns ferry's effective environment.
func checkSidecar(t *testing.T, r *rendered, dep *appsv1.Deployment) ferryEnv {
	t.Helper()
	where := fmt.Sprintf("%s: Deployment %s", r.dir, dep.Name)
	spec := &dep.Spec.Template.Spec

	if findContainer(spec.Containers, "ferry") != nil {
		t.Errorf("%s: ferry is among containers: it must be a native sidecar (an init container)", where)
	}
	var ferry *corev1.Container
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == "ferry" {
			if ferry != nil {
				t.Fatalf("%s: two init containers named ferry", where)
			}
			ferry = &spec.InitContainers[i]
		}
	}
	if ferry == nil {
		t.Fatalf("%s: no init container named ferry", where)
	}
	where += ", container ferry"

	if ferry.RestartPolicy == nil || *ferry.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: restartPolicy %v, want Always (a native sidecar)", where, ferry.RestartPolicy)
	}
	if img, tag, ok := strings.Cut(ferry.Image, ":"); !ok || img != "ghcr.io/ferry-sidecar/ferry" || tag == "" || tag == "latest" {
		t.Errorf("%s: image %q, want ghcr.io/ferry-sidecar/ferry:<pinned tag>", where, ferry.Image)
	}
	if len(ferry.Command) > 0 || len(ferry.Args) > 0 {
		t.Errorf("%s: command %v args %v: the image's entrypoint runs the sidecar", where, ferry.Command, ferry.Args)
	}

	// Ports: the admin port only; the publish API stays on loopback.
	if len(ferry.Ports) != 1 || ferry.Ports[0].Name != adminPortName || ferry.Ports[0].ContainerPort != adminPort ||
		(ferry.Ports[0].Protocol != "" && ferry.Ports[0].Protocol != corev1.ProtocolTCP) {
		t.Errorf("%s: ports %+v, want exactly %s %d/TCP", where, ferry.Ports, adminPortName, adminPort)
	}

	// Probes on the admin port.
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{
		{"startupProbe", "/readyz", ferry.StartupProbe},
		{"readinessProbe", "/readyz", ferry.ReadinessProbe},
		{"livenessProbe", "/healthz", ferry.LivenessProbe},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: %s is not an HTTP GET", where, p.kind)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || portNumber(ferry, g.Port) != adminPort || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("%s: %s GET %s on port %s (%d), want %s on %d", where, p.kind, g.Path, g.Port.String(), portNumber(ferry, g.Port), p.path, adminPort)
		}
	}
	if sp := ferry.StartupProbe; sp != nil && int64(sp.PeriodSeconds)*int64(sp.FailureThreshold) < 60 {
		t.Errorf("%s: startupProbe allows %ds: recovering a large outbox needs a minute or more", where, sp.PeriodSeconds*sp.FailureThreshold)
	}

	// Security context: non-root, read-only, nothing extra.
	sc := ferry.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext", where)
	}
	switch {
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("%s: runAsNonRoot is not true", where)
	case sc.RunAsUser == nil || *sc.RunAsUser != nonrootUID:
		t.Errorf("%s: runAsUser %v, want %d (the image's USER is the name nonroot)", where, sc.RunAsUser, nonrootUID)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", where)
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", where, sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", where, sc.SeccompProfile)
	}
	req, lim := ferry.Resources.Requests, ferry.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("%s: resources %+v: want cpu and memory requests and a memory limit", where, ferry.Resources)
	}

	// Environment: names from the contract, secrets as files.
	env := resolveEnv(t, where, r, ferry)
	design := designVars(t)
	for _, name := range env.order {
		if name == "HOSTNAME" {
			continue
		}
		if !design[name] {
			t.Errorf("%s: %s (from its %s) is not a variable of DESIGN.md's Configuration table", where, name, env.source[name])
		}
	}
	for _, name := range secretVars {
		if env.source[name] != "" {
			t.Errorf("%s: %s is set (%s): secrets must come as files through %s_FILE", where, name, env.source[name], name)
		}
	}
	if got := env.field["HOSTNAME"]; got != "metadata.name" {
		t.Errorf("%s: HOSTNAME from %q, want the pod name (fieldRef metadata.name)", where, got)
	}
	if got, want := env.field["FERRY_APP_ID"], "metadata.labels['"+appNameLabel+"']"; got != want {
		t.Errorf("%s: FERRY_APP_ID from %q, want fieldRef %s", where, got, want)
	} else if id := dep.Spec.Template.Labels[appNameLabel]; id == "" {
		t.Errorf("%s: the pod template has no label %s, so FERRY_APP_ID would be empty", where, appNameLabel)
	}
	if got, want := env.field["FERRY_SUBSCRIPTIONS"], "metadata.annotations['"+subscriptionsNote+"']"; got != want {
		t.Errorf("%s: FERRY_SUBSCRIPTIONS from %q, want fieldRef %s", where, got, want)
	}
	for _, name := range []string{"FERRY_REDIS_URL", "FERRY_LISTEN_ADDR", "FERRY_ADMIN_ADDR", "FERRY_APP_URL", "FERRY_OUTBOX_DIR",
		"FERRY_OUTBOX_MAX_BYTES", "FERRY_SHUTDOWN_TIMEOUT"} {
		if env.source[name] != "configmap" {
			t.Errorf("%s: %s comes from %q, want the ConfigMap", where, name, env.source[name])
		}
	}
	if u, err := url.Parse(env.literal["FERRY_REDIS_URL"]); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		t.Errorf("%s: FERRY_REDIS_URL %q: %v", where, env.literal["FERRY_REDIS_URL"], err)
	} else if _, hasPassword := u.User.Password(); hasPassword {
		t.Errorf("%s: FERRY_REDIS_URL carries a password: it belongs in FERRY_REDIS_PASSWORD_FILE", where)
	}
	if host, _, err := net.SplitHostPort(env.literal["FERRY_LISTEN_ADDR"]); err != nil || host != "127.0.0.1" {
		t.Errorf("%s: FERRY_LISTEN_ADDR %q: the publish API must stay on loopback", where, env.literal["FERRY_LISTEN_ADDR"])
	}
	if _, port, err := net.SplitHostPort(env.literal["FERRY_ADMIN_ADDR"]); err != nil || port != strconv.Itoa(adminPort) {
		t.Errorf("%s: FERRY_ADMIN_ADDR %q does not listen on the probed port %d", where, env.literal["FERRY_ADMIN_ADDR"], adminPort)
	}

	// The Secret, mounted read-only as files, one per _FILE variable.
	sv := findVolume(spec, secretVolume)
	var mount *corev1.VolumeMount
	for i := range ferry.VolumeMounts {
		if ferry.VolumeMounts[i].Name == secretVolume {
			mount = &ferry.VolumeMounts[i]
		}
	}
	switch {
	case sv == nil || sv.Secret == nil:
		t.Errorf("%s: no Secret volume %s", where, secretVolume)
	case mount == nil || mount.MountPath != secretDir || !mount.ReadOnly || mount.SubPath != "":
		t.Errorf("%s: Secret volume mount %+v, want %s read-only at %s", where, mount, secretVolume, secretDir)
	default:
		if sv.Secret.SecretName != secretName || (sv.Secret.Optional != nil && *sv.Secret.Optional) {
			t.Errorf("%s: Secret volume %+v, want the required Secret %q", where, sv.Secret, secretName)
		}
		paths := map[string]string{} // key → path
		for _, it := range sv.Secret.Items {
			paths[it.Key] = it.Path
		}
		want := map[string]bool{}
		for name, key := range secretFiles {
			want[key] = true
			if env.source[name] != "env" {
				t.Errorf("%s: %s is not set in env (from %q)", where, name, env.source[name])
				continue
			}
			if got := env.literal[name]; got != secretDir+"/"+paths[key] || paths[key] == "" {
				t.Errorf("%s: %s=%q, but key %s is mounted at %q", where, name, got, key, secretDir+"/"+paths[key])
			}
			if s, ok := r.secrets[sv.Secret.SecretName]; ok {
				if _, inData := s.Data[key]; !inData && s.StringData[key] == "" {
					t.Errorf("%s: Secret %s has no key %s for %s", where, s.Name, key, name)
				}
			}
		}
		for key := range paths {
			if !want[key] {
				t.Errorf("%s: Secret key %s is mounted but no _FILE variable reads it", where, key)
			}
		}
	}

	// The outbox volume, an emptyDir larger than the outbox may grow.
	ov := findVolume(spec, outboxVolume)
	var outboxMount string
	for _, m := range ferry.VolumeMounts {
		if m.Name == outboxVolume && !m.ReadOnly && m.SubPath == "" {
			outboxMount = m.MountPath
		}
	}
	maxBytes, err := strconv.ParseInt(env.literal["FERRY_OUTBOX_MAX_BYTES"], 10, 64)
	switch {
	case ov == nil || ov.EmptyDir == nil:
		t.Errorf("%s: no emptyDir volume %s", where, outboxVolume)
	case outboxMount == "":
		t.Errorf("%s: %s is not mounted writable", where, outboxVolume)
	case !strings.HasPrefix(env.literal["FERRY_OUTBOX_DIR"], strings.TrimSuffix(outboxMount, "/")+"/"):
		t.Errorf("%s: FERRY_OUTBOX_DIR %q is not on the outbox volume (mounted at %s): the read-only root would refuse it", where, env.literal["FERRY_OUTBOX_DIR"], outboxMount)
	case err != nil || maxBytes <= 0:
		t.Errorf("%s: FERRY_OUTBOX_MAX_BYTES %q: %v", where, env.literal["FERRY_OUTBOX_MAX_BYTES"], err)
	case ov.EmptyDir.SizeLimit == nil || ov.EmptyDir.SizeLimit.Cmp(*resource.NewQuantity(maxBytes, resource.BinarySI)) <= 0:
		t.Errorf("%s: outbox sizeLimit %v is not above FERRY_OUTBOX_MAX_BYTES %d: the kubelet would evict the pod before ferry answers outbox-full", where, ov.EmptyDir.SizeLimit, maxBytes)
	}

	// The grace period covers ferry's drain.
	budget, err := time.ParseDuration(env.literal["FERRY_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Errorf("%s: FERRY_SHUTDOWN_TIMEOUT: %v", where, err)
	} else if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= budget {
		t.Errorf("%s: terminationGracePeriodSeconds %v is not above FERRY_SHUTDOWN_TIMEOUT %s", where, g, budget)
	}

	if dep.Spec.Template.Labels[sidecarLabel] != "true" {
		t.Errorf("%s: pod template lacks the label %s=true that the PodMonitor selects", where, sidecarLabel)
	}
	return env
}

func TestBase(t *testing.T) {
	r := render(t, kubeDir+"/base")
	want := map[string]int{"Deployment": 1, "Secret": 2, "ConfigMap": 1, "Service": 1, "StatefulSet": 1, "PodMonitor": 1, "PrometheusRule": 1}
	got := map[string]int{"Deployment": len(r.deployments), "Secret": len(r.secrets), "ConfigMap": len(r.configMaps), "Service": len(r.services),
		"StatefulSet": len(r.statefulSets), "PodMonitor": len(r.podMonitors), "PrometheusRule": len(r.rules)}
	if !reflect.DeepEqual(got, want) || r.objects != 8 {
		t.Errorf("base objects %v (%d), want %v", got, r.objects, want)
	}
	shop := r.deployments["shop"]
	if shop == nil {
		t.Fatal("base has no Deployment shop")
	}
	if shop.Labels[injectLabel] != "true" {
		t.Errorf("Deployment shop lacks the opt-in label %s=true", injectLabel)
	}
	if len(shop.Spec.Template.Spec.InitContainers) != 0 || findContainer(shop.Spec.Template.Spec.Containers, "ferry") != nil {
		t.Error("the base's Deployment already has ferry: the sidecar belongs to the component only")
	}
	checkSupporting(t, r)
}

// checkSupporting checks what base and overlay share: Redis, the Secrets,
// the PodMonitor and the PrometheusRule.
func checkSupporting(t *testing.T, r *rendered) {
	t.Helper()
	where := r.dir

	// Redis is configured for ferry's guarantee.
	cm := r.configMaps["redis"]
	if cm == nil {
		t.Fatalf("%s: no ConfigMap redis", where)
	}
	conf := map[string]string{}
	for line := range strings.Lines(cm.Data["redis.conf"]) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && !strings.HasPrefix(k, "#") {
			conf[k] = v
		}
	}
	for k, v := range map[string]string{"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"} {
		if conf[k] != v {
			t.Errorf("%s: redis.conf %s = %q, want %q", where, k, conf[k], v)
		}
	}
	svc := r.services["redis"]
	if svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 6379 {
		t.Errorf("%s: Service redis %+v, want port 6379", where, svc)
	}
	if sts := r.statefulSets["redis"]; sts == nil || svc == nil ||
		!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("%s: Service redis does not select the Redis StatefulSet's pods", where)
	}

	// One password, two Secrets: Redis's own and the one ferry mounts.
	redisPW, ferryPW := secretValue(r.secrets["redis"], "password"), secretValue(r.secrets[secretName], "redis-password")
	if redisPW == "" || redisPW != ferryPW {
		t.Errorf("%s: Secret redis password %q and Secret ferry redis-password %q differ", where, redisPW, ferryPW)
	}
	for name, key := range secretFiles {
		if secretValue(r.secrets[secretName], key) == "" {
			t.Errorf("%s: Secret %s has no %s (for %s)", where, secretName, key, name)
		}
	}
	// The app's own references to Secret keys resolve.
	for _, dep := range r.deployments {
		for _, c := range append(slices.Clone(dep.Spec.Template.Spec.Containers), dep.Spec.Template.Spec.InitContainers...) {
			for _, ev := range c.Env {
				if ref := ev.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
					if secretValue(r.secrets[ref.SecretKeyRef.Name], ref.SecretKeyRef.Key) == "" {
						t.Errorf("%s: %s/%s env %s refers to %s/%s, which the build does not define", where, dep.Name, c.Name, ev.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
					}
				}
			}
		}
	}

	// The PodMonitor scrapes ferry's admin port by name and adds `app`.
	pm := r.podMonitors["ferry"]
	if pm == nil {
		t.Fatalf("%s: no PodMonitor ferry", where)
	}
	if sel := pm.Spec.Selector.MatchLabels; !reflect.DeepEqual(sel, map[string]string{sidecarLabel: "true"}) {
		t.Errorf("%s: PodMonitor selects %v, want %s=true", where, sel, sidecarLabel)
	}
	if eps := pm.Spec.PodMetricsEndpoints; len(eps) != 1 || eps[0].Port != adminPortName || eps[0].Path != "/metrics" ||
		len(eps[0].Relabelings) != 1 || eps[0].Relabelings[0].TargetLabel != "app" ||
		!slices.Equal(eps[0].Relabelings[0].SourceLabels, []string{"__meta_kubernetes_pod_label_app_kubernetes_io_name"}) {
		t.Errorf("%s: PodMonitor endpoints %+v, want /metrics on %s with app from %s", where, eps, adminPortName, appNameLabel)
	}

	// The PrometheusRule carries exactly the rules of alerts.yaml.
	pr := r.rules["ferry"]
	if pr == nil {
		t.Fatalf("%s: no PrometheusRule ferry", where)
	}
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var alerts ruleGroups
	if err := decodeStrict(b, &alerts); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if !reflect.DeepEqual(pr.Spec, alerts) {
		t.Errorf("%s: the PrometheusRule's spec differs from %s; run: go test ./deploy -run TestPrometheusRule -update", where, alertsFile)
	}
	names := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			names[rule.Alert] = true
			if rule.Annotations["runbook"] == "" || rule.Annotations["summary"] == "" || rule.Labels["severity"] == "" {
				t.Errorf("%s: alert %s lacks a runbook, summary or severity", where, rule.Alert)
			}
		}
	}
	for _, a := range []string{"FerryOutboxFilling", "FerryAppUnhealthy", "FerryOutboxDiskFull", "FerryRedisDown"} {
		if !names[a] {
			t.Errorf("%s: the PrometheusRule has no alert %s", where, a)
		}
	}
}

// secretValue returns a Secret's value for key from data or stringData.
func secretValue(s *corev1.Secret, key string) string {
	if s == nil {
		return ""
	}
	if v, ok := s.StringData[key]; ok {
		return v
	}
	return string(s.Data[key])
}

// TestComponent applies the component to plain Deployments it has never
// seen (testdata/plain): the opted-in one gets the sidecar and keeps all of
// its own; the other is left exactly as written.
func TestComponent(t *testing.T) {
	r := render(t, "testdata/plain")
	in := map[string]*appsv1.Deployment{}
	for _, d := range readObjects[appsv1.Deployment](t, "testdata/plain/deployments.yaml") {
		in[d.Name] = d
	}
	if len(in) != 2 || len(r.deployments) != 2 {
		t.Fatalf("testdata/plain: %d Deployments in, %d out; want 2 and 2", len(in), len(r.deployments))
	}
	if len(r.configMaps) != 1 || r.objects != 3 {
		t.Errorf("component on two Deployments: %d objects, %d ConfigMaps; want 3 objects (the Deployments and ferry's ConfigMap)", r.objects, len(r.configMaps))
	}
	for name, cm := range r.configMaps {
		if !strings.HasPrefix(name, "ferry-") || len(name) <= len("ferry-") {
			t.Errorf("ConfigMap %q: want ferry-<hash>, so a changed setting rolls the pods", name)
		}
		for k := range cm.Data {
			if !strings.HasPrefix(k, "FERRY_") {
				t.Errorf("ConfigMap %s: key %s is not a FERRY_ variable", name, k)
			}
		}
	}

	legacy := r.deployments["legacy"]
	if legacy.Labels[injectLabel] == "true" {
		t.Fatal("testdata: legacy must not opt in")
	}
	if !reflect.DeepEqual(legacy, in["legacy"]) {
		t.Errorf("the component changed a Deployment that did not opt in:\n got %+v\nwant %+v", legacy.Spec.Template.Spec, in["legacy"].Spec.Template.Spec)
	}

	orders, before := r.deployments["orders"], in["orders"]
	env := checkSidecar(t, r, orders)
	if !strings.HasPrefix(env.literal["FERRY_OUTBOX_DIR"], "/var/lib/ferry/") {
		t.Errorf("FERRY_OUTBOX_DIR %q: want it under /var/lib/ferry, the image's VOLUME", env.literal["FERRY_OUTBOX_DIR"])
	}
	spec, was := orders.Spec.Template.Spec, before.Spec.Template.Spec
	if !reflect.DeepEqual(spec.Containers, was.Containers) {
		t.Errorf("the app's containers changed:\n got %+v\nwant %+v", spec.Containers, was.Containers)
	}
	// ferry comes first, so that it runs while the app's own init containers
	// do (they can publish already), then theirs in their order.
	if n := len(was.InitContainers); len(spec.InitContainers) != n+1 || spec.InitContainers[0].Name != "ferry" ||
		!reflect.DeepEqual(spec.InitContainers[1:], was.InitContainers) {
		t.Errorf("init containers %v: want ferry, then the app's own in their order", containerNames(spec.InitContainers))
	}
	for _, v := range was.Volumes {
		if got := findVolume(&spec, v.Name); got == nil || !reflect.DeepEqual(*got, v) {
			t.Errorf("the app's volume %s changed or went missing", v.Name)
		}
	}
	if len(spec.Volumes) != len(was.Volumes)+2 {
		t.Errorf("volumes %d, want the app's %d plus %s and %s", len(spec.Volumes), len(was.Volumes), outboxVolume, secretVolume)
	}
	if !reflect.DeepEqual(spec.SecurityContext, was.SecurityContext) || orders.Spec.Replicas == nil || *orders.Spec.Replicas != *before.Spec.Replicas ||
		!reflect.DeepEqual(orders.Spec.Selector, before.Spec.Selector) {
		t.Error("the component changed the app's pod securityContext, replicas or selector")
	}
	for k, v := range before.Spec.Template.Labels {
		if orders.Spec.Template.Labels[k] != v {
			t.Errorf("pod label %s changed", k)
		}
	}
	if got := orders.Spec.Template.Annotations[subscriptionsNote]; got != before.Spec.Template.Annotations[subscriptionsNote] || got == "" {
		t.Errorf("annotation %s = %q", subscriptionsNote, got)
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestOverlayExample(t *testing.T) {
	r := render(t, kubeDir+"/overlays/example")
	if r.objects != 10 {
		t.Errorf("overlay: %d objects, want 10 (namespace, the base's 8, ferry's ConfigMap)", r.objects)
	}
	ns := ""
	for name := range r.namespaces {
		ns = name
	}
	if len(r.namespaces) != 1 || ns == "" {
		t.Fatalf("overlay: namespaces %v, want one", r.namespaces)
	}
	for _, m := range []metav1.Object{r.deployments["shop"], r.statefulSets["redis"], r.services["redis"], r.secrets["ferry"], r.podMonitors["ferry"], r.rules["ferry"]} {
		if reflect.ValueOf(m).IsNil() {
			t.Fatalf("overlay lacks an object of the base")
		}
		if m.GetNamespace() != ns {
			t.Errorf("overlay: %s in namespace %q, want %q", m.GetName(), m.GetNamespace(), ns)
		}
	}
	shop := r.deployments["shop"]
	env := checkSidecar(t, r, shop)
	checkSupporting(t, r)

	// The app's own container is the base's, untouched.
	base := render(t, kubeDir+"/base")
	if !reflect.DeepEqual(shop.Spec.Template.Spec.Containers, base.deployments["shop"].Spec.Template.Spec.Containers) {
		t.Error("the overlay changed the app container")
	}
	// The overlay's settings merged into the component's ConfigMap.
	for k, v := range map[string]string{"FERRY_APP_HEALTH_PATH": "/healthz", "FERRY_DELIVERY_TIMEOUT": "10s", "FERRY_REDIS_URL": "redis://redis:6379/0"} {
		if env.literal[k] != v {
			t.Errorf("overlay: %s = %q, want %q", k, env.literal[k], v)
		}
	}
	// FERRY_REDIS_URL names the Service of the build.
	u, err := url.Parse(env.literal["FERRY_REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	if svc := r.services[u.Hostname()]; svc == nil || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != u.Port() {
		t.Errorf("FERRY_REDIS_URL %s does not name a Service of the build", u.Redacted())
	}
	// The PodMonitor selects the shop pods.
	sel, err := metav1.LabelSelectorAsSelector(&r.podMonitors["ferry"].Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(shop.Spec.Template.Labels)) {
		t.Errorf("the PodMonitor does not select the shop pods (%v)", err)
	}
	if id := shop.Spec.Template.Labels[appNameLabel]; id != "shop" {
		t.Errorf("FERRY_APP_ID would be %q, want shop", id)
	}
}

// kedaScalerKeys are the redis-streams scaler's metadata names (keda.sh,
// Scalers, Redis Streams; pkg/scalers/redis_streams_scaler.go).
var kedaScalerKeys = map[string]bool{
	"address": true, "host": true, "port": true, "addressFromEnv": true, "hostFromEnv": true, "portFromEnv": true,
	"usernameFromEnv": true, "passwordFromEnv": true, "stream": true, "consumerGroup": true, "pendingEntriesCount": true,
	"streamLength": true, "lagCount": true, "activationLagCount": true, "enableTLS": true, "unsafeSsl": true, "databaseIndex": true,
}

func TestKEDAScaledObject(t *testing.T) {
	r := render(t, kubeDir+"/keda")
	app := render(t, kubeDir+"/overlays/example")
	if len(r.scaledObjects) != 1 || r.objects != 2 {
		t.Fatalf("keda: %d objects, %d ScaledObjects; want the ScaledObject and its TriggerAuthentication", r.objects, len(r.scaledObjects))
	}
	var so *scaledObject
	for _, s := range r.scaledObjects {
		so = s
	}
	where := "ScaledObject " + so.Name
	if so.APIVersion != "keda.sh/v1alpha1" {
		t.Errorf("%s: apiVersion %s", where, so.APIVersion)
	}
	ref := so.Spec.ScaleTargetRef
	dep := app.deployments[ref.Name]
	if dep == nil || (ref.Kind != "" && ref.Kind != "Deployment") || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
		t.Fatalf("%s: scaleTargetRef %+v is not a Deployment of the example overlay", where, ref)
	}
	if so.Namespace != dep.Namespace {
		t.Errorf("%s: namespace %q, but its target is in %q", where, so.Namespace, dep.Namespace)
	}
	checkSidecar(t, app, dep)
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
		t.Errorf("%s: minReplicaCount %v: keep at least 1 (pending entries are not lag, and the pods publish too)", where, so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		t.Errorf("%s: maxReplicaCount %v", where, so.Spec.MaxReplicaCount)
	}

	appID := dep.Spec.Template.Labels[appNameLabel]
	topics := map[string]bool{}
	for sub := range strings.SplitSeq(dep.Spec.Template.Annotations[subscriptionsNote], ",") {
		topic, _, _ := strings.Cut(sub, "=")
		topics[topic] = true
	}
	if len(so.Spec.Triggers) != len(topics) {
		t.Errorf("%s: %d triggers for %d subscribed topics", where, len(so.Spec.Triggers), len(topics))
	}
	for i, tr := range so.Spec.Triggers {
		w := fmt.Sprintf("%s trigger %d", where, i)
		md := tr.Metadata
		if tr.Type != "redis-streams" {
			t.Errorf("%s: type %q, want redis-streams", w, tr.Type)
		}
		for k := range md {
			if !kedaScalerKeys[k] {
				t.Errorf("%s: metadata %q is not a redis-streams scaler parameter", w, k)
			}
		}
		topic := strings.TrimSuffix(strings.TrimPrefix(md["stream"], "ferry:{"), "}:stream")
		if md["stream"] != "ferry:{"+topic+"}:stream" || !topics[topic] {
			t.Errorf("%s: stream %q is not ferry:{<topic>}:stream of a subscribed topic %v", w, md["stream"], topics)
		}
		if i == 0 && md["stream"] != "ferry:{orders}:stream" {
			t.Errorf("%s: stream %q, want ferry:{orders}:stream first", w, md["stream"])
		}
		if md["consumerGroup"] != appID {
			t.Errorf("%s: consumerGroup %q, want the app id %q (FERRY_APP_ID)", w, md["consumerGroup"], appID)
		}
		if n, err := strconv.Atoi(md["lagCount"]); err != nil || n <= 0 {
			t.Errorf("%s: lagCount %q: want a positive number (it also selects the lag mode)", w, md["lagCount"])
		}
		if md["pendingEntriesCount"] != "" || md["streamLength"] != "" {
			t.Errorf("%s: pendingEntriesCount/streamLength set: the lag mode ignores them", w)
		}
		// address: host:port of the Redis Service, fully qualified (KEDA
		// resolves it from its own namespace).
		host, port, err := net.SplitHostPort(md["address"])
		if err != nil || md["addressFromEnv"] != "" || md["host"] != "" {
			t.Errorf("%s: address %q (%v): want host:port of the Redis Service", w, md["address"], err)
			continue
		}
		svcName, svcNS, _ := strings.Cut(host, ".")
		svcNS = strings.TrimSuffix(strings.TrimSuffix(svcNS, ".cluster.local"), ".svc")
		svc := app.services[svcName]
		if svc == nil || svc.Namespace != svcNS || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != port {
			t.Errorf("%s: address %s is not <service>.<namespace>.svc:<port> of a Service of the overlay", w, md["address"])
		}
		if tr.AuthenticationRef == nil {
			t.Errorf("%s: no authenticationRef: Redis needs a password", w)
			continue
		}
		ta := r.triggerAuths[tr.AuthenticationRef.Name]
		if ta == nil || ta.Namespace != so.Namespace {
			t.Errorf("%s: TriggerAuthentication %s not in the build's namespace", w, tr.AuthenticationRef.Name)
			continue
		}
		var pw string
		for _, ref := range ta.Spec.SecretTargetRef {
			if ref.Parameter != "password" && ref.Parameter != "username" {
				t.Errorf("%s: TriggerAuthentication parameter %q", w, ref.Parameter)
			}
			if s := app.secrets[ref.Name]; s == nil || s.Namespace != so.Namespace || secretValue(s, ref.Key) == "" {
				t.Errorf("%s: TriggerAuthentication refers to %s/%s, which the overlay does not define", w, ref.Name, ref.Key)
			} else if ref.Parameter == "password" {
				pw = secretValue(s, ref.Key)
			}
		}
		if pw == "" || pw != secretValue(app.secrets[secretName], "redis-password") {
			t.Errorf("%s: the password KEDA uses is not the one ferry uses", w)
		}
	}
}
