package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/sipwake/sipwake/internal/sip"
)

// ParseUpstream reads sip:host[:port][;transport=udp|tcp|tls] or sips:...
func ParseUpstream(s string) (sip.Upstream, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || (scheme != "sip" && scheme != "sips") {
		return sip.Upstream{}, fmt.Errorf("upstream %q: want a sip: or sips: URI", s)
	}
	hostport, params, _ := strings.Cut(rest, ";")
	u := sip.Upstream{Transport: "udp", Port: 5060}
	if scheme == "sips" {
		u.Transport, u.Port = "tls", 5061
	}
	for _, p := range strings.Split(params, ";") {
		if k, v, _ := strings.Cut(p, "="); strings.EqualFold(k, "transport") {
			u.Transport = strings.ToLower(v)
		}
	}
	switch u.Transport {
	case "udp", "tcp", "tls":
	default:
		return sip.Upstream{}, fmt.Errorf("upstream %q: transport %q (udp, tcp or tls)", s, u.Transport)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	} else {
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			return sip.Upstream{}, fmt.Errorf("upstream %q: bad port", s)
		}
		u.Port = n
	}
	if host == "" || strings.ContainsAny(host, "@ <>") {
		return sip.Upstream{}, fmt.Errorf("upstream %q: bad host", s)
	}
	u.Host = host
	return u, nil
}

// KeyMaterial returns every configured sealing key by id, base64 as
// written, reading key files. An empty map means none is configured.
func (s Seal) KeyMaterial() (map[string]string, error) {
	out := map[string]string{}
	add := func(key, id string, inline Secret, file string) error {
		v := string(inline)
		if file != "" {
			raw, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("config: %s: %w", key, err)
			}
			v = strings.TrimSpace(string(raw))
		}
		if v != "" {
			out[id] = v
		}
		return nil
	}
	if err := add("seal.key_file", s.KeyID, s.Key, s.KeyFile); err != nil {
		return nil, err
	}
	for i, p := range s.Previous {
		if err := add(fmt.Sprintf("seal.previous[%d].key_file", i), p.ID, p.Key, p.KeyFile); err != nil {
			return nil, err
		}
	}
	return out, nil
}
