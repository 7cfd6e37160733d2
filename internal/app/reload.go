package app

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/push"
)

// pushSwitch is the relay's Sender. A reload swaps in a Dispatcher built
// from fresh credentials; the old one is closed once the pushes already in
// flight on it have returned, so no call loses its push to a reload.
type pushSwitch struct {
	mu  sync.RWMutex
	cur *pushGen
	// retiring tracks old Dispatchers waiting for their last pushes.
	retiring sync.WaitGroup
}

type pushGen struct {
	d        *push.Dispatcher
	inflight sync.WaitGroup
}

func newPushSwitch(d *push.Dispatcher) *pushSwitch { return &pushSwitch{cur: &pushGen{d: d}} }

// Send implements relay.Pusher.
func (p *pushSwitch) Send(ctx context.Context, t push.Target, m push.Message) push.Result {
	p.mu.RLock()
	g := p.cur
	// Added under the read lock: swap holds the write lock, so once it has
	// replaced g no new push can join g's in-flight count.
	g.inflight.Add(1)
	p.mu.RUnlock()
	defer g.inflight.Done()
	return g.d.Send(ctx, t, m)
}

func (p *pushSwitch) current() *push.Dispatcher {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cur.d
}

func (p *pushSwitch) swap(d *push.Dispatcher) {
	p.mu.Lock()
	old := p.cur
	p.cur = &pushGen{d: d}
	p.mu.Unlock()
	p.retiring.Add(1)
	go func() {
		defer p.retiring.Done()
		old.inflight.Wait()
		old.d.Close()
	}()
}

// close closes the current Dispatcher and waits for retired ones.
func (p *pushSwitch) close() {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	cur.inflight.Wait()
	cur.d.Close()
	p.retiring.Wait()
}

// Reload re-reads, from the paths in cfg, the SIP and admin TLS
// certificates and the push credentials (push.apps), without dropping a
// call: new TLS handshakes get the new certificate and new pushes the new
// clients. What fails to load is reported and the old one is kept. Other
// settings take effect on restart.
func (a *App) Reload(ctx context.Context, cfg config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return errors.New("reload: sipwake is stopping")
	}
	var errs []error
	if a.sipCert != nil && cfg.SIP.Listen.TLS != "" {
		if err := a.sipCert.reload(cfg.SIP.Listen.TLSCertFile, cfg.SIP.Listen.TLSKeyFile); err != nil {
			errs = append(errs, err)
		} else {
			a.log.Info("reload: SIP TLS certificate loaded", "cert", cfg.SIP.Listen.TLSCertFile)
		}
	}
	if a.adminCert != nil && cfg.Admin.TLSCertFile != "" {
		if err := a.adminCert.reload(cfg.Admin.TLSCertFile, cfg.Admin.TLSKeyFile); err != nil {
			errs = append(errs, err)
		} else {
			a.log.Info("reload: admin TLS certificate loaded", "cert", cfg.Admin.TLSCertFile)
		}
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	d, err := a.pusher.current().Renew(cfg.Push)
	if err != nil {
		errs = append(errs, err)
	} else {
		a.pusher.swap(d)
		a.log.Info("reload: push clients rebuilt", "apps", d.Apps())
		if !slices.Equal(providers(cfg.Push), providers(a.cfg.Push)) {
			a.log.Warn("reload: the set of push providers changed; REGISTERs for a new provider get 555 until restart")
		}
	}
	if len(errs) > 0 {
		a.log.Error("reload: some parts kept their old settings", "error", errors.Join(errs...))
	}
	return errors.Join(errs...)
}
