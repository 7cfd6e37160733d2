package deploy

import (
	"bytes"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/config"
)

// composeFile is what docker-compose.yaml may say. It is decoded strictly:
// a key the test does not know (an env_file, a mount of another kind) fails
// it rather than slipping past its checks.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes  map[string]struct{} `yaml:"volumes"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           string            `yaml:"build"`
	Command         []string          `yaml:"command"`
	DependsOn       []string          `yaml:"depends_on"`
	Environment     map[string]string `yaml:"environment"`
	Secrets         []string          `yaml:"secrets"`
	Volumes         []string          `yaml:"volumes"`
	Ports           []string          `yaml:"ports"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	Restart         string            `yaml:"restart"`
	MemLimit        string            `yaml:"mem_limit"`
	Networks        map[string]struct {
		IPv4Address string   `yaml:"ipv4_address"`
		Aliases     []string `yaml:"aliases"`
	} `yaml:"networks"`
}

// The variables docker-compose.yaml takes from the shell, as a user of the
// quickstart (deploy/README.md) sets them.
var composeVars = map[string]string{"SIPWAKE_PUBLIC_HOST": "sip.example.com"}

// readCompose drops the comment lines, interpolates ${VAR}, ${VAR:?message} and ${VAR:-default}
// from composeVars and decodes the file strictly.
func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(repoFile(t, "docker-compose.yaml"), "")
	raw = regexp.MustCompile(`\$\{(\w+)(?::[?-][^}]*)?\}`).ReplaceAllStringFunc(raw, func(ref string) string {
		name := strings.Trim(strings.SplitN(ref[2:], ":", 2)[0], "}")
		v, ok := composeVars[name]
		if !ok {
			t.Errorf("docker-compose.yaml takes %s from the shell: say how in deploy/README.md and add it to composeVars", name)
		}
		return v
	})
	if strings.Contains(raw, "$") {
		t.Fatal("docker-compose.yaml: an interpolation this test does not understand")
	}
	var f composeFile
	dec := yaml.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return f
}

// bindMounts maps each container path a service bind-mounts to the
// repository path behind it ("./x:/y[:ro]"); named volumes are checked
// against the file's volumes.
func bindMounts(t *testing.T, f composeFile, name string) map[string]string {
	t.Helper()
	binds := map[string]string{}
	for _, v := range f.Services[name].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Errorf("%s: volume %q: want source:target", name, v)
			continue
		}
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(src, "./") {
			if _, ok := f.Volumes[src]; !ok {
				t.Errorf("%s: named volume %s is not declared under volumes", name, src)
			}
			continue
		}
		if !repoHas(src) {
			t.Errorf("%s: mounts %s, which the repository does not have", name, src)
		}
		binds[dst] = path.Clean(src)
	}
	return binds
}

// inRepo is the repository path of a container file under a bind mount.
func inRepo(binds map[string]string, file string) (string, bool) {
	for dst, src := range binds {
		if rest, ok := strings.CutPrefix(file, dst+"/"); ok {
			return src + "/" + rest, true
		}
	}
	return "", false
}

// The compose file runs as it stands: Kamailio's config is the shipped one
// and takes the defines the file gives it; every file and secret it mounts
// is in the repository or made by the user as deploy/README.md says;
// sipwake accepts its environment and reaches Kamailio where Kamailio
// listens, trusts its address, and drains before Compose kills it.
func TestComposeFile(t *testing.T) {
	f := readCompose(t)
	readme := repoFile(t, "deploy/README.md")
	kam, sw := f.Services["kamailio"], f.Services["sipwake"]
	if kam.Image == "" || sw.Build == "" {
		t.Fatal("docker-compose.yaml: want the services kamailio (an image) and sipwake (built here)")
	}
	if !repoHas(path.Join(sw.Build, "Dockerfile")) {
		t.Errorf("sipwake builds %s, which has no Dockerfile", sw.Build)
	}

	// Kamailio runs the shipped config with defines it declares.
	cfgFile, ok := inRepo(bindMounts(t, f, "kamailio"), commandFlag(kam.Command, "-f"))
	if !ok || !repoHas(cfgFile) {
		t.Fatalf("kamailio -f %q is not a file of the repository mounted into it", commandFlag(kam.Command, "-f"))
	}
	if cfgFile != "deploy/kamailio/kamailio.cfg" {
		t.Errorf("kamailio runs %s, not the tested deploy/kamailio/kamailio.cfg", cfgFile)
	}
	defs := kamailioDefines(t, repoFile(t, cfgFile))
	for i, a := range kam.Command {
		if a != "-A" || i+1 == len(kam.Command) {
			continue
		}
		name, value, _ := strings.Cut(kam.Command[i+1], "=")
		if _, ok := defs[name]; !ok {
			t.Errorf("kamailio -A %s: %s declares no such define", name, cfgFile)
		}
		defs[name] = value
	}

	// Secrets: a file of the repository, or one the user makes.
	for _, s := range append(append([]string{}, kam.Secrets...), sw.Secrets...) {
		file := f.Secrets[s].File
		switch {
		case file == "":
			t.Errorf("secret %s is not declared with a file", s)
		case !repoHas(file) && !strings.Contains(readme, path.Base(file)):
			t.Errorf("secret %s: %s is neither in the repository nor made in deploy/README.md", s, file)
		}
	}
	bindMounts(t, f, "sipwake")

	// sipwake: the image's config, this environment, secrets at
	// /run/secrets/<name>.
	cfg, root := loadSipwake(t, container{
		config: repoFile(t, "configs/sipwake.yaml"),
		env:    sw.Environment,
		mounts: map[string][]string{"/run/secrets": sw.Secrets},
	})
	if n := mountedFiles(t, cfg, root); n == 0 {
		t.Error("sipwake is given no secret file (seal key, push credentials)")
	}

	up, err := config.ParseUpstream(cfg.SIP.Upstream)
	if err != nil {
		t.Fatal(err)
	}
	_, kamPort, _ := net.SplitHostPort(defs["SIP_LISTEN"])
	if up.HostPort() != net.JoinHostPort("kamailio", kamPort) {
		t.Errorf("sip.upstream %s: Kamailio listens on %s (SIP_LISTEN)", cfg.SIP.Upstream, defs["SIP_LISTEN"])
	}
	kamIP, err := netip.ParseAddr(kam.Networks["sip"].IPv4Address)
	if err != nil {
		t.Fatalf("kamailio's address on network sip: %v", err)
	}
	if !trusts(cfg.Calls.TrustedSources, kamIP) {
		t.Errorf("calls.trusted_sources %v leave out Kamailio's %s", cfg.Calls.TrustedSources, kamIP)
	}
	host, _, err := config.ParsePublicAddress(cfg.SIP.PublicAddress)
	if err != nil || !slices.Contains(sw.Networks["sip"].Aliases, host) {
		t.Errorf("sip.public_address %s: its host should be sipwake's alias on network sip, %v", cfg.SIP.PublicAddress, sw.Networks["sip"].Aliases)
	}
	grace, err := time.ParseDuration(sw.StopGracePeriod)
	if err != nil || grace <= cfg.Shutdown.DrainTimeout {
		t.Errorf("stop_grace_period %q should exceed shutdown.drain_timeout %v", sw.StopGracePeriod, cfg.Shutdown.DrainTimeout)
	}
}

func trusts(cidrs []string, ip netip.Addr) bool {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}
