package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/httpserve"
)

// manifests are the objects of deploy/kubernetes, by name.
type manifests struct {
	configMaps  map[string]*corev1.ConfigMap
	services    map[string]*corev1.Service
	deployments map[string]*appsv1.Deployment
	pdbs        map[string]*policyv1.PodDisruptionBudget
	// secrets are the Secrets deploy/README.md creates, with their keys:
	// the manifests mount them but do not ship them.
	secrets map[string]map[string]bool
}

// readManifests decodes every document of deploy/kubernetes/*.yaml into
// the Kubernetes type of its apiVersion and kind, strictly: a field the
// type does not have, or one given twice, fails the test.
func readManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{
		configMaps:  map[string]*corev1.ConfigMap{},
		services:    map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
		secrets:     readmeSecrets(t),
	}
	files, err := filepath.Glob(filepath.Join("..", "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes (%v)", err)
	}
	for _, f := range files {
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(repoFile(t, "deploy/kubernetes/"+filepath.Base(f)))))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := m.add(doc); err != nil {
				t.Errorf("%s: %v", filepath.Base(f), err)
			}
		}
	}
	return m
}

func (m manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	if tm.Kind == "" {
		if len(bytes.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil))) > 0 {
			return errors.New("a document without kind")
		}
		return nil // comments only
	}
	var (
		obj   metav1.Object
		index func()
	)
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		obj, index = o, func() { m.configMaps[o.Name] = o }
	case "v1 Service":
		o := &corev1.Service{}
		obj, index = o, func() { m.services[o.Name] = o }
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		obj, index = o, func() { m.deployments[o.Name] = o }
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		obj, index = o, func() { m.pdbs[o.Name] = o }
	default:
		return fmt.Errorf("%s %s: a kind this test does not check (add it here)", tm.APIVersion, tm.Kind)
	}
	if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if obj.GetName() == "" || obj.GetNamespace() != "" {
		return fmt.Errorf("%s %q: want a name and no namespace (kubectl -n chooses it)", tm.Kind, obj.GetName())
	}
	index()
	return nil
}

// readmeSecrets reads the `kubectl create secret` commands of
// deploy/README.md: each Secret's name and keys.
func readmeSecrets(t *testing.T) map[string]map[string]bool {
	t.Helper()
	secrets := map[string]map[string]bool{}
	for _, line := range strings.Split(repoFile(t, "deploy/README.md"), "\n") {
		_, cmd, ok := strings.Cut(line, "kubectl create secret ")
		if !ok {
			continue
		}
		f := strings.Fields(cmd)
		if len(f) < 2 {
			t.Fatalf("deploy/README.md: %q", line)
		}
		keys := map[string]bool{}
		if f[0] == "tls" {
			keys[corev1.TLSCertKey], keys[corev1.TLSPrivateKeyKey] = true, true
		}
		for _, arg := range f[2:] {
			if v, ok := strings.CutPrefix(arg, "--from-file="); ok {
				key, file, named := strings.Cut(v, "=")
				if !named {
					key = path.Base(file)
				}
				keys[key] = true
			}
			if v, ok := strings.CutPrefix(arg, "--from-literal="); ok {
				key, _, _ := strings.Cut(v, "=")
				keys[key] = true
			}
		}
		secrets[f[1]] = keys
	}
	if len(secrets) == 0 {
		t.Fatal("deploy/README.md creates no Secret")
	}
	return secrets
}

// podOf is the Deployment whose pods a selector picks; exactly one must.
func (m manifests) podOf(t *testing.T, what string, sel *metav1.LabelSelector) *appsv1.Deployment {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		t.Fatalf("%s: selector %v (%v)", what, sel, err)
	}
	var found []*appsv1.Deployment
	for _, d := range m.deployments {
		if s.Matches(labels.Set(d.Spec.Template.Labels)) {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s selects the pods of %d Deployments, want 1", what, len(found))
	}
	return found[0]
}

// containerPort is the port of c that a Service or probe names.
func containerPort(c corev1.Container, port intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	for _, p := range c.Ports {
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.Protocol == proto && (port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// files maps each directory c mounts to the files its volume puts there,
// and checks that each volume names a ConfigMap of the manifests or a
// Secret deploy/README.md creates, with the keys it asks for.
func (m manifests) files(t *testing.T, pod corev1.PodSpec, c corev1.Container) map[string][]string {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	out := map[string][]string{}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok || vm.SubPath != "" {
			t.Errorf("container %s: mount %s: no such volume (or a subPath, which this test does not follow)", c.Name, vm.Name)
			continue
		}
		var keys map[string]bool
		switch {
		case v.ConfigMap != nil:
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
				continue
			}
			keys = map[string]bool{}
			for k := range cm.Data {
				keys[k] = true
			}
			out[vm.MountPath] = mountedKeys(t, v.Name, keys, v.ConfigMap.Items)
		case v.Secret != nil:
			keys, ok = m.secrets[v.Secret.SecretName]
			if !ok {
				t.Errorf("volume %s: deploy/README.md creates no Secret %s", v.Name, v.Secret.SecretName)
				continue
			}
			out[vm.MountPath] = mountedKeys(t, v.Name, keys, v.Secret.Items)
		case v.EmptyDir != nil:
			out[vm.MountPath] = nil
		default:
			t.Errorf("volume %s: a kind this test does not follow", v.Name)
		}
	}
	return out
}

func mountedKeys(t *testing.T, volume string, keys map[string]bool, items []corev1.KeyToPath) []string {
	t.Helper()
	var files []string
	for k := range keys {
		files = append(files, k)
	}
	if len(items) > 0 {
		files = nil
		for _, it := range items {
			if !keys[it.Key] {
				t.Errorf("volume %s: no key %s", volume, it.Key)
			}
			files = append(files, it.Path)
		}
	}
	return files
}

// podIP stands for the pod's address where the downward API gives it.
const podIP = "10.244.1.7"

// env resolves c's environment as the kubelet does: the downward API's pod
// IP, Secret values (deploy/README.md must create the key), and $(NAME)
// references to variables defined before. Variables sipwake does not read
// (no SIPWAKE_ prefix) must serve as such a reference.
func (m manifests) env(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	used := map[string]bool{}
	ref := regexp.MustCompile(`\$\((\w+)\)`)
	for _, e := range c.Env {
		v := e.Value
		switch src := e.ValueFrom; {
		case src == nil:
		case src.FieldRef != nil && src.FieldRef.FieldPath == "status.podIP":
			v = podIP
		case src.SecretKeyRef != nil:
			if !m.secrets[src.SecretKeyRef.Name][src.SecretKeyRef.Key] {
				t.Errorf("env %s: deploy/README.md creates no Secret %s with key %s", e.Name, src.SecretKeyRef.Name, src.SecretKeyRef.Key)
			}
			v = "from-secret"
		default:
			t.Errorf("env %s: a source this test does not follow", e.Name)
		}
		env[e.Name] = ref.ReplaceAllStringFunc(v, func(r string) string {
			name := r[2 : len(r)-1]
			val, ok := env[name]
			if !ok {
				t.Errorf("env %s: $(%s) is not defined before it", e.Name, name)
			}
			used[name] = true
			return val
		})
	}
	for name := range env {
		if !strings.HasPrefix(name, config.EnvPrefix) && !used[name] {
			t.Errorf("env %s: sipwake does not read it and no variable refers to it", name)
		}
	}
	return env
}

// node is the sipwake Deployment and its container: the one that mounts
// the config file the image reads, and that config, loaded.
type node struct {
	d    *appsv1.Deployment
	c    corev1.Container
	cfg  config.Config
	root string
}

func (m manifests) sipwake(t *testing.T) node {
	t.Helper()
	want := imageConfigPath(t)
	var found []node
	var text string
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for dir, files := range m.files(t, d.Spec.Template.Spec, c) {
				for _, f := range files {
					if path.Join(dir, f) != want {
						continue
					}
					found = append(found, node{d: d, c: c})
					text = m.configText(t, d.Spec.Template.Spec, c, dir, f)
				}
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d containers are given sipwake's config file %s, want 1", len(found), want)
	}
	n := found[0]
	n.cfg, n.root = loadSipwake(t, container{config: text, env: m.env(t, n.c), mounts: m.files(t, n.d.Spec.Template.Spec, n.c)})
	return n
}

// configText is the ConfigMap value a container finds as dir/file.
func (m manifests) configText(t *testing.T, pod corev1.PodSpec, c corev1.Container, dir, file string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				key := file
				for _, it := range v.ConfigMap.Items {
					if it.Path == file {
						key = it.Key
					}
				}
				return m.configMaps[v.ConfigMap.Name].Data[key]
			}
		}
	}
	t.Fatalf("container %s: %s is not from a ConfigMap", c.Name, path.Join(dir, file))
	return ""
}

// Every manifest decodes into its Kubernetes type without a field left
// over; every Deployment selects its own pods; every Service reaches ports
// its pods have; every volume, env source and probe names what exists.
func TestManifestsCrossReference(t *testing.T) {
	m := readManifests(t)
	if len(m.deployments) == 0 || len(m.services) == 0 {
		t.Fatal("no Deployment or Service in deploy/kubernetes")
	}
	for name, d := range m.deployments {
		if m.podOf(t, "Deployment "+name, d.Spec.Selector) != d {
			t.Errorf("Deployment %s does not select its own pods", name)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			m.files(t, d.Spec.Template.Spec, c)
			m.env(t, c)
			for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				switch {
				case p == nil:
					t.Errorf("Deployment %s, container %s: no %s probe", name, c.Name, kind)
				case p.HTTPGet != nil:
					if _, ok := containerPort(c, p.HTTPGet.Port, corev1.ProtocolTCP); !ok {
						t.Errorf("%s: %s probe port %s is not a TCP port of %s", name, kind, p.HTTPGet.Port.String(), c.Name)
					}
				case p.TCPSocket != nil:
					if _, ok := containerPort(c, p.TCPSocket.Port, corev1.ProtocolTCP); !ok {
						t.Errorf("%s: %s probe port %s is not a TCP port of %s", name, kind, p.TCPSocket.Port.String(), c.Name)
					}
				}
			}
		}
	}
	for name, s := range m.services {
		d := m.podOf(t, "Service "+name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		for _, p := range s.Spec.Ports {
			if p.Protocol == "" {
				p.Protocol = corev1.ProtocolTCP
			}
			found := false
			for _, c := range d.Spec.Template.Spec.Containers {
				_, ok := containerPort(c, p.TargetPort, p.Protocol)
				found = found || ok
			}
			if !found {
				t.Errorf("Service %s port %s: %s/%s is no port of Deployment %s", name, p.Name, p.TargetPort.String(), p.Protocol, d.Name)
			}
		}
	}
}

// The strictness readManifests relies on: a misspelt field is an error.
func TestManifestDecodingIsStrict(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 3\n"
	if err := (manifests{deployments: map[string]*appsv1.Deployment{}}).add([]byte(doc)); err == nil {
		t.Fatal("a Deployment with spec.replica decoded without error")
	}
}

// The sipwake nodes: sipwake's own loader accepts the ConfigMap with the
// Deployment's environment and files; the nodes share Redis; each is
// reached at its pod IP; probes ask the admin listener; the pod is killed
// only after the drain; the memory limit and runtime.memory_limit agree;
// the PodDisruptionBudget leaves the service up.
func TestSipwakeNodes(t *testing.T) {
	m := readManifests(t)
	n := m.sipwake(t)
	cfg, c, pod := n.cfg, n.c, n.d.Spec.Template.Spec
	if k := mountedFiles(t, cfg, n.root); k == 0 {
		t.Error("sipwake is given no key or credential file")
	}
	replicas := int32(1)
	if n.d.Spec.Replicas != nil {
		replicas = *n.d.Spec.Replicas
	}
	if cfg.Store.Backend != "redis" || replicas < 2 {
		t.Errorf("store.backend %s with %d replicas: want several nodes on Redis", cfg.Store.Backend, replicas)
	}

	for proto, listen := range map[corev1.Protocol]string{corev1.ProtocolUDP: cfg.SIP.Listen.UDP, corev1.ProtocolTCP: cfg.SIP.Listen.TCP} {
		_, port, err := net.SplitHostPort(listen)
		p, _ := strconv.Atoi(port)
		if _, ok := containerPort(c, intstr.FromInt32(int32(p)), proto); err != nil || !ok {
			t.Errorf("sip.listen %s (%s): no such container port", listen, proto)
		}
	}
	_, udpPort, _ := net.SplitHostPort(cfg.SIP.Listen.UDP)
	if want := net.JoinHostPort(podIP, udpPort); cfg.Cluster.NodeAddress != want {
		t.Errorf("cluster.node_address %q, want the pod IP and UDP port: %s", cfg.Cluster.NodeAddress, want)
	}

	_, adminPort, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil || httpserve.Loopback(cfg.Admin.Listen) {
		t.Errorf("admin.listen %q: the kubelet probes from outside the pod", cfg.Admin.Listen)
	}
	scheme := corev1.URISchemeHTTP
	if cfg.Admin.TLSCertFile != "" {
		scheme = corev1.URISchemeHTTPS
	}
	for want, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("want an HTTP probe of %s", want)
			continue
		}
		port, ok := containerPort(c, p.HTTPGet.Port, corev1.ProtocolTCP)
		if p.HTTPGet.Path != want || !ok || strconv.Itoa(int(port.ContainerPort)) != adminPort || p.HTTPGet.Scheme != scheme {
			t.Errorf("probe %s %s://:%s: want %s %s on the admin listener %s", p.HTTPGet.Path, p.HTTPGet.Scheme, p.HTTPGet.Port.String(), want, scheme, cfg.Admin.Listen)
		}
	}

	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if preStop == 0 {
		t.Error("no preStop sleep: the dispatcher may still send to a node that stops")
	}
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod.TerminationGracePeriodSeconds != nil {
		grace = *pod.TerminationGracePeriodSeconds
	}
	if drain := int64(cfg.Shutdown.DrainTimeout.Seconds()); preStop+drain >= grace {
		t.Errorf("terminationGracePeriodSeconds %d: preStop %ds and shutdown.drain_timeout %ds leave no time to exit", grace, preStop, drain)
	}

	limit := c.Resources.Limits.Memory()
	soft, err := cfg.Runtime.MemoryLimitBytes()
	if err != nil || limit.IsZero() || soft < limit.Value()*3/4 || soft > limit.Value()*9/10 {
		t.Errorf("runtime.memory_limit %q: want 75%%..90%% of the container's memory limit %s", cfg.Runtime.MemoryLimit, limit)
	}

	pdbs := 0
	for name, pdb := range m.pdbs {
		if m.podOf(t, "PodDisruptionBudget "+name, pdb.Spec.Selector) != n.d {
			continue
		}
		pdbs++
		down := 0
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			down, err = intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, int(replicas), false)
		case pdb.Spec.MinAvailable != nil:
			var up int
			up, err = intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, int(replicas), true)
			down = int(replicas) - up
		}
		if err != nil || down < 1 || down >= int(replicas) {
			t.Errorf("PodDisruptionBudget %s lets %d of %d nodes go: want at least one, never all", name, down, replicas)
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets for the sipwake nodes, want 1", pdbs)
	}
}

// The dispatcher in front: Kamailio runs the config of its ConfigMap; its
// node list names the headless Service of the sipwake pods by name only,
// so their SRV records (_sip._udp) are asked; it advertises sipwake's
// public address, where the LoadBalancer Service takes UDP and TCP and
// keeps the registrar's source address for REGISTRAR_NETS.
func TestDispatcherInFrontOfNodes(t *testing.T) {
	m := readManifests(t)
	nodes := m.sipwake(t)
	var kam *appsv1.Deployment
	var c corev1.Container
	for _, d := range m.deployments {
		for _, ct := range d.Spec.Template.Spec.Containers {
			if len(ct.Command) > 0 && ct.Command[0] == "kamailio" {
				kam, c = d, ct
			}
		}
	}
	if kam == nil {
		t.Fatal("no Deployment runs kamailio")
	}
	pod := kam.Spec.Template.Spec
	cfgPath := commandFlag(c.Command, "-f")
	cfg := m.configText(t, pod, c, path.Dir(cfgPath), path.Base(cfgPath))
	defs := kamailioDefines(t, cfg)
	for _, want := range []string{"DISPATCHER_LIST", "PUBLIC_ADDR", "SIP_LISTEN", "REGISTRAR_NETS"} {
		if defs[want] == "" {
			t.Fatalf("the dispatcher's kamailio.cfg has no #!trydef %s", want)
		}
	}
	list := m.configText(t, pod, c, path.Dir(defs["DISPATCHER_LIST"]), path.Base(defs["DISPATCHER_LIST"]))

	dests := 0
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || f[0] != "1" {
			continue
		}
		dests++
		host, _, _ := strings.Cut(strings.TrimPrefix(f[1], "sip:"), ";")
		s, ok := m.services[host]
		switch {
		case strings.Contains(host, ":"):
			t.Errorf("dispatcher destination %s has a port: Kamailio would not ask its SRV records", f[1])
		case !ok || s.Spec.ClusterIP != corev1.ClusterIPNone:
			t.Errorf("dispatcher destination %s: no headless Service %s", f[1], host)
		case m.podOf(t, "Service "+host, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}) != nodes.d:
			t.Errorf("Service %s does not select the sipwake nodes", host)
		case !hasPort(s, "sip", corev1.ProtocolUDP, 0):
			t.Errorf("Service %s has no UDP port named sip: no _sip._udp SRV records", host)
		}
	}
	if dests == 0 {
		t.Fatalf("%s lists no destination in set 1", defs["DISPATCHER_LIST"])
	}

	if defs["PUBLIC_ADDR"] != nodes.cfg.SIP.PublicAddress {
		t.Errorf("the dispatcher advertises %s, sipwake's sip.public_address is %s", defs["PUBLIC_ADDR"], nodes.cfg.SIP.PublicAddress)
	}
	_, listen, _ := net.SplitHostPort(defs["SIP_LISTEN"])
	lp, _ := strconv.Atoi(listen)
	_, public, _ := net.SplitHostPort(defs["PUBLIC_ADDR"])
	pp, _ := strconv.Atoi(public)
	lbs := 0
	for name, s := range m.services {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		lbs++
		if m.podOf(t, "Service "+name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}) != kam {
			t.Errorf("LoadBalancer Service %s does not lead to the dispatcher", name)
		}
		if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("Service %s: externalTrafficPolicy Local keeps the registrar's address for REGISTRAR_NETS", name)
		}
		for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
			if !hasPort(s, "", proto, int32(pp)) {
				t.Errorf("Service %s: no %s port %d (PUBLIC_ADDR)", name, proto, pp)
			}
			if _, ok := containerPort(c, intstr.FromInt32(int32(lp)), proto); !ok {
				t.Errorf("kamailio listens on %s (SIP_LISTEN), not a %s port of its container", defs["SIP_LISTEN"], proto)
			}
		}
	}
	if lbs != 1 {
		t.Errorf("%d LoadBalancer Services, want 1 (the public address)", lbs)
	}
}

// hasPort reports whether s has a port of protocol proto, named name (if
// set) and numbered port (if not 0).
func hasPort(s *corev1.Service, name string, proto corev1.Protocol, port int32) bool {
	for _, p := range s.Spec.Ports {
		if p.Protocol == proto && (name == "" || p.Name == name) && (port == 0 || p.Port == port) {
			return true
		}
	}
	return false
}
