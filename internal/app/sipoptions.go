package app

import (
	"fmt"
	"net/netip"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/sip"
)

// sipOptions maps the config file's sip, calls and trunks sections onto
// the SIP side's Options.
func sipOptions(cfg config.Config) (sip.Options, error) {
	c := cfg.SIP
	up, err := config.ParseUpstream(c.Upstream)
	if err != nil {
		return sip.Options{}, err
	}
	o := sip.Options{
		Listen:          c.Listen,
		Upstream:        up,
		ContactMode:     c.UpstreamMode == "contact",
		UpstreamTimeout: c.UpstreamTimeout,
		UserAgent:       c.UserAgent,
		CallWait:        cfg.Calls.Wait,
		Ringing:         cfg.Calls.Ringing,
		RefreshLead:     cfg.Calls.RefreshLead,
		AwakePushDelay:  cfg.Calls.AwakePushDelay,
		RegisterRate:    c.RegisterRate, RegisterBurst: c.RegisterBurst,
		MaxRegistersInFlight: c.MaxRegistersInFlight,
	}
	if o.TrustedSources, err = prefixes(cfg.Calls.TrustedSources); err != nil {
		return sip.Options{}, err
	}
	for _, t := range cfg.Trunks {
		nets, err := prefixes(t.Sources)
		if err != nil {
			return sip.Options{}, err
		}
		o.Trunks = append(o.Trunks, sip.Trunk{Name: t.Name, Sources: nets, Domain: t.Domain})
	}
	if c.PublicAddress != "" {
		if o.PublicHost, o.PublicPort, err = config.ParsePublicAddress(c.PublicAddress); err != nil {
			return sip.Options{}, err
		}
	}
	if c.PublicAddressIPv6 != "" {
		// Its port, if any, is the one public_address gives both.
		if o.PublicHost6, _, err = config.ParsePublicAddress(c.PublicAddressIPv6); err != nil {
			return sip.Options{}, err
		}
	}
	return o, nil
}

func prefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("CIDR %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
