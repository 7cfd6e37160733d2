package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/store"
)

// The monitoring operators drop in: deploy/prometheus (rules, their promtool
// unit tests, scrape jobs) and deploy/grafana (the dashboard).
const (
	rulesFile     = "../../deploy/prometheus/sipwake-rules.yml"
	rulesTestFile = "../../deploy/prometheus/sipwake-rules.test.yml"
	scrapeFile    = "../../deploy/prometheus/prometheus.yml"
	dashboardFile = "../../deploy/grafana/sipwake.json"
	operationsDoc = "../../docs/OPERATIONS.md"
	runbookURL    = "https://github.com/sipwake/sipwake/blob/main/docs/OPERATIONS.md#"
)

type promRule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// shippedRules reads deploy/prometheus/sipwake-rules.yml.
func shippedRules(t *testing.T) []promRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []promRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &f)
	var out []promRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The rules, their unit tests and the scrape jobs pass Debian's promtool:
// the files load, and each alert fires on the series meant to fire it and
// stays quiet on the others.
func TestPrometheusRules(t *testing.T) {
	promtool := peertest.Need(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"check", "config", scrapeFile},
		{"test", "rules", rulesTestFile},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert says how bad it is and what it is, links its own entry of the
// runbook in docs/OPERATIONS.md, which has an entry for no other name, and
// has unit tests where it fires and where it does not.
func TestAlertsHaveRunbooksAndTests(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, runbook, ok := strings.Cut(string(doc), "\n## Runbook\n")
	if !ok {
		t.Fatalf("%s has no Runbook section", operationsDoc)
	}
	runbook, _, _ = strings.Cut(runbook, "\n## ")
	var entries []string
	for _, line := range strings.Split(runbook, "\n") {
		if name, ok := strings.CutPrefix(line, "### "); ok {
			entries = append(entries, name)
		}
	}

	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}

	var alerts []string
	for _, r := range shippedRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts = append(alerts, r.Alert)
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, k := range []string{"summary", "description"} {
			if r.Annotations[k] == "" {
				t.Errorf("%s has no %s", r.Alert, k)
			}
		}
		// GitHub's anchor for the heading "### SipwakeX" is #sipwakex.
		if got, want := r.Annotations["runbook_url"], runbookURL+strings.ToLower(r.Alert); got != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
		}
		if !slices.Contains(entries, r.Alert) {
			t.Errorf("%s has no runbook entry (### %s) in %s", r.Alert, r.Alert, operationsDoc)
		}
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("%s: %s tests it firing: %v, not firing: %v; want both", r.Alert, rulesTestFile, fires[r.Alert], quiet[r.Alert])
		}
	}
	for _, e := range entries {
		if !slices.Contains(alerts, e) {
			t.Errorf("runbook entry %q names no alert of %s", e, rulesFile)
		}
	}
}

// A real Prometheus (Debian's, with node_exporter) scrapes two real sipwake
// nodes with the shipped scrape jobs and evaluates the shipped rules, while
// the nodes take the traffic each dashboard panel and each rule reads: calls
// answered after a push, pushes rejected, refused and failing, a call timing
// out, a handed-over account, a REGISTER the store refuses and one the
// registrar never answers. Then every dashboard query and every recording
// rule returns a number, every series any query or rule selects exists,
// and every rule evaluates without error.
func TestMonitoringQueriesReturnData(t *testing.T) {
	promBin := peertest.Need(t, "prometheus", "prometheus")
	exporterBin := peertest.Need(t, "prometheus-node-exporter", "prometheus-node-exporter")

	apiAddr := peertest.Addr(t, 6, 8443)
	w := newWorld(t, withAdmin(t), func(c *config.Config) {
		// Long enough for a woken phone under load, short for the calls
		// that must fail or time out.
		c.Calls.Wait = 5 * time.Second
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	// A second node keeps its records in Redis.
	redisAddr := peertest.StartRedis(t, peertest.Addr(t, 8, 6379))
	cfg2 := w.cfg
	sip2 := peertest.Addr(t, 8, 5060)
	cfg2.SIP.Listen = sip.Listen{UDP: sip2}
	cfg2.Admin.Listen = peertest.Addr(t, 8, 9060)
	cfg2.API.Listen = ""
	cfg2.Store.Backend = "redis"
	cfg2.Store.Redis.Addrs = []string{redisAddr}
	cfg2.Seal.Key = config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
	startApp(t, cfg2)

	// node_exporter on node 1's host, so that the shipped relabelling gives
	// both the same host label.
	exporter := peertest.Addr(t, 2, 9100)
	startDaemon(t, "http://"+exporter+"/metrics", exporterBin, "--web.listen-address="+exporter,
		"--collector.disable-defaults", "--collector.filesystem",
		// Debian's default less overlay, which a container's / may be.
		"--collector.filesystem.fs-types-exclude=^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$")
	p := startPrometheus(t, promBin, peertest.Addr(t, 7, 9090), map[string][]scrapeTarget{
		"sipwake": {
			{peertest.Addr(t, 2, 9060), map[string]string{"mountpoint": mountPoint(t, w.cfg.Store.DataDir)}},
			{peertest.Addr(t, 8, 9060), nil},
		},
		"node": {{exporter, nil}},
	})
	start := time.Now()
	p.settle(1)

	// Every counter and histogram the rounds move goes up between two
	// scrapes, so rates and percentiles are numbers, not NaN.
	w.answeredCall(81)
	p.settle(1)
	w.answeredCall(82)

	// Pushes the services refuse, each to a phone of bob's whose call then
	// fails: token_rejected, wrong_topic, config_error, and failed once the
	// retries outlast the call's wait.
	for i, b := range []pushtest.Behavior{
		{Status: 400, Reason: "BadDeviceToken"},
		{Status: 400, Reason: "DeviceTokenNotForTopic"},
		{Status: 403, Reason: "InvalidProviderToken"},
		{Status: 500, Reason: "InternalServerError"},
	} {
		tok := w.fakes.APNs.VoIPToken(90 + i)
		w.fakes.APNs.Program(tok, b)
		w.sleepingDevice("bob", tok, 5080)
		mustSucceed(t, b.Reason, w.call("bob", "caller_expect", map[string]string{"expect": "480"}))
	}
	// A push delivered to a phone that never wakes: the call times out.
	w.sleepingDevice("bob", w.fakes.APNs.VoIPToken(95), 5080)
	mustSucceed(t, "unanswered", w.call("bob", "caller_expect", map[string]string{"expect": "480"}))

	body := `{"aor":"bob@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"bob",` +
		`"password":"` + password + `","expires":600,"push":{"provider":"apns","token":"` + w.fakes.APNs.VoIPToken(96) + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, "bob-phone", body); code != http.StatusCreated {
		t.Fatalf("PUT account answered %d", code)
	}

	// Redis out of memory: node 2 answers 500 to a REGISTER the registrar
	// accepted.
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	if err := rdb.ConfigSet(context.Background(), "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	res, _ := peertest.RunSipp(t, peertest.SippOptions{
		ScenarioXML: registerAny, Name: "register-full-redis", Remote: sip2, LocalIP: w.deviceIP, LocalPort: 5090,
		Injection: "SEQUENTIAL\nalice;" + domain + ";[authentication username=alice password=" + password + "];apns;" +
			w.fakes.APNs.VoIPToken(97) + ";" + w.fakes.APNs.Param() + "\n",
		Keys: map[string]string{"expires": "600"},
	})
	if code := finalCode(res); code != 500 {
		t.Fatalf("REGISTER into a full Redis answered %d, want 500\n%s", code, res.Messages())
	}

	// The registrar gone: node 1 answers 408.
	w.kam.Stop()
	w.expect("alice", apnsParams(w.fakes.APNs.VoIPToken(98)), 408)
	p.settle(2)

	// What Grafana substitutes: one job, all nodes, and a window over the
	// whole run up to the query.
	grafana := func(q string) string {
		return strings.NewReplacer("$job", "sipwake", "$instance", ".+",
			"$__rate_interval", strconv.Itoa(int(time.Since(start).Seconds())+5)+"s").Replace(q)
	}
	numbers := dashboardQueries(t)
	var evaluated []string
	for _, r := range shippedRules(t) {
		if r.Record != "" {
			numbers = append(numbers, r.Record, r.Expr)
		}
		evaluated = append(evaluated, r.Expr)
	}
	deadline := time.Now().Add(time.Minute)
	eventually := func(what string, check func() error) {
		t.Helper()
		for {
			err := check()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v", what, err)
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	for _, q := range numbers {
		eventually(q, func() error { return p.number(grafana(q)) })
	}
	seen := map[string]bool{}
	for _, q := range append(numbers, evaluated...) {
		sels := selectors(grafana(q))
		if len(sels) == 0 {
			t.Errorf("no series selector found in %q", q)
		}
		for _, sel := range sels {
			if !seen[sel] {
				seen[sel] = true
				eventually(sel+" (in "+q+")", func() error { return p.exists(sel) })
			}
		}
	}
	eventually("the shipped rules in Prometheus", func() error { return p.rulesHealthy(shippedRules(t)) })
}

// answeredCall calls alice's phone (registered with the token VoIPToken(i)),
// which the push wakes and which answers.
func (w *world) answeredCall(i int) {
	w.t.Helper()
	tok := w.fakes.APNs.VoIPToken(i)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_answered", nil)
	waitFor(w.t, func() bool { return len(w.fakes.APNs.PushesTo(tok)) > 0 }, "the call push")
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(w.t, "caller", caller)
	mustSucceed(w.t, "device", device)
}

// mountPoint is where the filesystem holding dir is mounted, as
// node_exporter names it.
func mountPoint(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("df", "--output=target", dir).Output()
	if err != nil {
		t.Fatalf("df %s: %v", dir, err)
	}
	lines := strings.Fields(string(out))
	return lines[len(lines)-1]
}

// startDaemon runs argv for t until the test ends, once ready answers 200;
// its output goes to the test log if the test fails.
func startDaemon(t *testing.T, ready string, argv ...string) {
	t.Helper()
	out := &peertest.Buffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(argv[0]), out.String())
		}
	})
	waitFor(t, func() bool {
		select {
		case <-done:
			t.Fatalf("%s exited:\n%s", filepath.Base(argv[0]), out.String())
		default:
		}
		res, err := http.Get(ready)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, ready)
}

type scrapeTarget struct {
	addr   string
	labels map[string]string
}

// prometheus is a running Prometheus and its HTTP API.
type prometheus struct {
	t   *testing.T
	url string
}

// startPrometheus runs Debian's Prometheus on addr with the shipped scrape
// jobs (deploy/prometheus/prometheus.yml: job names, relabelling) and
// rules, its targets replaced by targets (per job), over plain HTTP, every
// second.
func startPrometheus(t *testing.T, bin, addr string, targets map[string][]scrapeTarget) *prometheus {
	t.Helper()
	var cfg map[string]any
	readYAML(t, scrapeFile, &cfg)
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
	cfg["rule_files"] = []any{rules}
	jobs, _ := cfg["scrape_configs"].([]any)
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		ts, ok := targets[name]
		if !ok {
			continue
		}
		delete(targets, name)
		job["scheme"] = "http"
		var static []any
		for _, st := range ts {
			static = append(static, map[string]any{"targets": []string{st.addr}, "labels": st.labels})
		}
		job["static_configs"] = static
	}
	if len(targets) > 0 {
		t.Fatalf("%s has no scrape jobs %v", scrapeFile, targets)
	}
	dir := t.TempDir()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, "http://"+addr+"/-/ready", bin, "--config.file="+file,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	return &prometheus{t: t, url: "http://" + addr}
}

// get calls the HTTP API and decodes its data into v.
func (p *prometheus) get(path string, v any) error {
	res, err := http.Get(p.url + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %d, %v", path, res.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query evaluates expr now.
func (p *prometheus) query(expr string) ([]promSample, error) {
	var data struct {
		Result []promSample `json:"result"`
	}
	err := p.get("/api/v1/query?query="+url.QueryEscape(expr), &data)
	return data.Result, err
}

// number: expr returns at least one sample that is a number (not NaN, not
// infinite).
func (p *prometheus) number(expr string) error {
	res, err := p.query(expr)
	if err != nil {
		return err
	}
	for _, s := range res {
		v, _ := s.Value[1].(string)
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return nil
		}
	}
	return fmt.Errorf("no number among %d samples: %v", len(res), res)
}

// exists: sel selects at least one series.
func (p *prometheus) exists(sel string) error {
	res, err := p.query(sel)
	if err == nil && len(res) == 0 {
		err = fmt.Errorf("no such series")
	}
	return err
}

// settle waits until Prometheus has scraped every target n times after
// now.
func (p *prometheus) settle(n int) {
	p.t.Helper()
	for range n {
		since := float64(time.Now().UnixMilli()) / 1000
		waitFor(p.t, func() bool {
			res, err := p.query("min(timestamp(up))")
			if err != nil || len(res) == 0 {
				return false
			}
			v, _ := res[0].Value[1].(string)
			at, err := strconv.ParseFloat(v, 64)
			return err == nil && at > since
		}, "a scrape of every target")
	}
}

// rulesHealthy: Prometheus has loaded every shipped rule and evaluated each
// without error.
func (p *prometheus) rulesHealthy(shipped []promRule) error {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", &data); err != nil {
		return err
	}
	health := map[string]string{}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			health[r.Name] = r.Health + " " + r.LastError
		}
	}
	var bad []string
	for _, r := range shipped {
		name := r.Record + r.Alert
		if h := health[name]; h != "ok " {
			bad = append(bad, fmt.Sprintf("%s: %q", name, h))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("rules not (yet) evaluated without error: %s", strings.Join(bad, "; "))
	}
	return nil
}

// dashboardQueries returns every query of deploy/grafana/sipwake.json: the
// panels' targets, and the series selector of each label_values variable.
// Each panel but a row has at least one.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	ids := map[int]bool{}
	for _, panel := range d.Panels {
		if ids[panel.ID] {
			t.Errorf("%s: panel id %d twice", dashboardFile, panel.ID)
		}
		ids[panel.ID] = true
		if panel.Type != "row" && len(panel.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, panel.Title)
		}
		for _, tg := range panel.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("%s: panel %q has a target without expr or refId", dashboardFile, panel.Title)
			}
			out = append(out, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Fatalf("%s: variable query %q is not label_values(selector, label)", dashboardFile, v.Definition)
		}
		out = append(out, m[1])
	}
	return out
}

// selectorRE finds the series selectors in a query: a metric of sipwake,
// node_exporter, Go or the process, up, or a recorded series (level:name:ops),
// with its label matchers.
var selectorRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])((?:[a-z_]+:[a-z0-9_]+:[a-z0-9_]+|(?:sipwake|node|go|process)_[a-z0-9_]+|up)\b(?:\{[^}]*\})?)`)

// selectors lists the series selectors in expr.
func selectors(expr string) []string {
	var out []string
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	return out
}
