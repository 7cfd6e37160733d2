package sip

import (
	"log/slog"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/sipmsg"
)

// maxUDPMessage is the largest SIP message sipwake sends over UDP. sipgo
// refuses anything over 1300 bytes by default, but a registrar's 200 lists
// every contact of the AOR (with pn-* parameters and Path, a few hundred
// bytes each) and must reach the device over the transport it came on:
// like Kamailio, send it and let IP fragment it.
const maxUDPMessage = 65000

// completedLinger is how long a finished transaction stays to absorb
// retransmissions. RFC 3261 keeps a non-INVITE server transaction 64*T1 =
// 32 s over UDP (Timer J), and sipgo keeps every UDP client transaction
// (REGISTER forwarded upstream included) 32 s as well (its Timer D), each
// with its parsed request and response: at 2,000 REGISTER/s that is over
// half a gigabyte of finished exchanges. A peer only retransmits after
// losing an answer, at most T2 = 4 s apart, so T4 = 5 s catches them, which
// is what Kamailio's tm keeps (wt_timer). A later retransmission is handled
// as a new request: the registrar answers it again, and a repeated final
// response toward sipwake is dropped as unmatched.
const completedLinger = 5 * time.Second

// ConfigureLibrary sets sipgo's process-wide knobs: the UDP size limit, how
// long finished transactions linger, and its default logger (redacted). Call
// it once, from main or a TestMain, before any Server exists.
func ConfigureLibrary(log *slog.Logger) {
	sip.UDPMTUSize = maxUDPMessage
	sip.Timer_J = completedLinger
	sip.Timer_D = completedLinger
	sip.SetDefaultLogger(sipmsg.RedactedLogger(log))
}
