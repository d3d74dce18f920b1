package proxy

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/eosproxy/eosproxy/store"
)

// anonymous is the principal of a connection that did not authenticate, as
// Kafka names it.
const anonymous = "User:ANONYMOUS"

// principal returns the connection's principal.
func (c *conn) principal() string {
	if p := c.who.Load(); p != nil {
		return *p
	}
	return anonymous
}

func (c *conn) setPrincipal(p string) {
	c.who.Store(&p)
}

// certPrincipal is the principal Kafka's DefaultKafkaPrincipalBuilder makes
// of a client certificate (with the default ssl.principal.mapping.rules):
// "User:" and the subject's distinguished name in RFC 2253 form, as Java's
// X500Principal.getName() writes it: the certificate's names in reverse of
// their encoded order (most specific first), Java's keywords, other types
// as OID=#hex of their DER value.
func certPrincipal(cert *x509.Certificate) string {
	var rdns []dnSET
	if rest, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || len(rest) > 0 {
		return "User:" + cert.Subject.String()
	}
	var b strings.Builder
	for i := len(rdns) - 1; i >= 0; i-- {
		if i < len(rdns)-1 {
			b.WriteByte(',')
		}
		for j, atv := range rdns[i] {
			if j > 0 {
				b.WriteByte('+')
			}
			kw, ok := x500Keywords[atv.Type.String()]
			var s string
			if rest, err := asn1.Unmarshal(atv.Value.FullBytes, &s); !ok || err != nil || len(rest) > 0 {
				b.WriteString(atv.Type.String() + "=#" + hex.EncodeToString(atv.Value.FullBytes))
				continue
			}
			b.WriteString(kw + "=" + escapeDN(s))
		}
	}
	return "User:" + b.String()
}

// dnSET is one relative distinguished name of a certificate's subject,
// values kept as encoded (a SET, for encoding/asn1, by its name).
type dnSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// x500Keywords are the attribute types Java's RFC 2253 form names.
var x500Keywords = map[string]string{
	"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "STREET",
	"2.5.4.10": "O", "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
}

// escapeDN escapes an attribute value as RFC 2253 asks.
func escapeDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(",+\"<>;\\", r),
			i == 0 && (r == '#' || r == ' '),
			i == len(s)-1 && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// saslUser reads the user name from the first client message of a SASL
// exchange, as the backend's principal builder names it: PLAIN's authcid,
// SCRAM's n= attribute, OAUTHBEARER's token subject (the backend has
// verified the token by the time it counts). "" when it cannot be read.
func saslUser(mechanism string, first []byte) string {
	switch {
	case mechanism == "PLAIN":
		parts := bytes.Split(first, []byte{0})
		if len(parts) != 3 {
			return ""
		}
		return string(parts[1])
	case strings.HasPrefix(mechanism, "SCRAM-"):
		// gs2-header "n,," or "n,a=authzid," then "n=user,r=nonce".
		_, rest, _ := strings.Cut(string(first), ",")
		_, rest, ok := strings.Cut(rest, ",")
		if !ok {
			return ""
		}
		for _, attr := range strings.Split(rest, ",") {
			if name, ok := strings.CutPrefix(attr, "n="); ok {
				return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(name)
			}
		}
	case mechanism == "OAUTHBEARER":
		for _, kv := range strings.Split(string(first), "\x01") {
			tok, ok := strings.CutPrefix(kv, "auth=Bearer ")
			if !ok {
				continue
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				return ""
			}
			payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
			var claims struct {
				Sub string `json:"sub"`
			}
			if err != nil || json.Unmarshal(payload, &claims) != nil {
				return ""
			}
			return claims.Sub
		}
	}
	return ""
}

// owners binds each producer id to the principal that initialised it, so
// that no other principal can write or end transactions with it. A binding
// is kept in the DB with the producer state it guards, so it survives a
// restart as that state does, and is dropped once that state is gone
// (prune). Producer ids initialised without a principal (User:ANONYMOUS,
// every one when eosproxy runs without authentication) are not written: an
// id with no binding belongs to User:ANONYMOUS.
type owners struct {
	db        *store.DB
	stop      chan struct{}
	closeOnce sync.Once
	// bound: some id has been bound to a principal other than
	// User:ANONYMOUS; until then (eosproxy without authentication) an
	// anonymous connection may use every id without a look-up.
	bound atomic.Bool
	mu    sync.Mutex
	m     map[int64]string // cache of the DB's bindings
}

func openOwners(db *store.DB) (*owners, error) {
	o := &owners{db: db, m: map[int64]string{}, stop: make(chan struct{})}
	found := errors.New("found")
	err := db.Scan(ownerPrefix, func(k, v []byte) error {
		if len(v) > 8 {
			o.bound.Store(true)
			return found
		}
		return nil
	})
	if err != nil && err != found {
		return nil, fmt.Errorf("load producer id principals: %w", err)
	}
	return o, nil
}

var ownerPrefix = []byte("proxy/pid-principal/")

func ownerKey(pid int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{}, ownerPrefix...), uint64(pid))
}

// bind records that principal initialised pid; durable before it returns.
func (o *owners) bind(pid int64, principal string) error {
	if cur, err := o.owner(pid); err == nil && cur == principal {
		return nil
	}
	if principal != anonymous {
		o.bound.Store(true)
	} else {
		// The absence of a binding says it; an earlier binding of this id
		// to another principal is replaced by an empty one.
		principal = ""
	}
	// The binding's time leads its value: prune keeps young ones.
	v := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixMilli()))
	if err := o.db.Put(ownerKey(pid), append(v, principal...)); err != nil {
		return fmt.Errorf("bind producer id %d to its principal: %w", pid, err)
	}
	o.mu.Lock()
	o.m[pid] = principal
	o.mu.Unlock()
	return nil
}

// owner is the principal pid is bound to.
func (o *owners) owner(pid int64) (string, error) {
	o.mu.Lock()
	p, ok := o.m[pid]
	o.mu.Unlock()
	if !ok {
		v, err := o.db.Get(ownerKey(pid))
		if err != nil {
			return "", fmt.Errorf("principal of producer id %d: %w", pid, err)
		}
		if len(v) >= 8 {
			p = string(v[8:])
		}
		o.mu.Lock()
		o.m[pid] = p
		o.mu.Unlock()
	}
	if p == "" {
		return anonymous, nil
	}
	return p, nil
}

// prune drops the bindings older than age of producer ids that inUse no
// longer knows (their producer state expired), so bindings do not pile up.
func (o *owners) prune(age time.Duration, inUse func() map[int64]bool) (int, error) {
	used := inUse()
	cutoff := uint64(time.Now().Add(-age).UnixMilli())
	var stale [][]byte
	err := o.db.Scan(ownerPrefix, func(k, v []byte) error {
		if len(k) != len(ownerPrefix)+8 || len(v) < 8 {
			return nil
		}
		pid := int64(binary.BigEndian.Uint64(k[len(ownerPrefix):]))
		if binary.BigEndian.Uint64(v) < cutoff && !used[pid] {
			stale = append(stale, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("scan producer id principals: %w", err)
	}
	for _, k := range stale {
		if err := o.db.Update(func(txn *store.Txn) error { return txn.Delete(k) }); err != nil {
			return 0, fmt.Errorf("drop producer id principal: %w", err)
		}
		o.mu.Lock()
		delete(o.m, int64(binary.BigEndian.Uint64(k[len(ownerPrefix):])))
		o.mu.Unlock()
	}
	return len(stale), nil
}

// pruneLoop prunes every interval until close.
func (o *owners) pruneLoop(interval, age time.Duration, inUse func() map[int64]bool, log zerolog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
			if n, err := o.prune(age, inUse); err != nil {
				log.Warn().Err(err).Msg("cannot prune producer id principals")
			} else if n > 0 {
				log.Debug().Int("dropped", n).Msg("pruned principals of expired producer ids")
			}
		}
	}
}

func (o *owners) close() { o.closeOnce.Do(func() { close(o.stop) }) }

// mayUse reports whether principal may use pid: it initialised it.
func (o *owners) mayUse(pid int64, principal string) bool {
	if principal == anonymous && !o.bound.Load() {
		return true
	}
	owner, err := o.owner(pid)
	return err == nil && owner == principal
}

// authorizeTxn returns the code refusing this connection's use of the
// transactional id, and of pid (≥ 0) under it, or 0: Kafka's answer when its
// authorizer denies WRITE on the TRANSACTIONAL_ID; a producer id another
// principal initialised is denied so too.
func (c *conn) authorizeTxn(op, id string, pid int64) int16 {
	who := c.principal()
	reason := ""
	switch {
	case !c.p.cfg.ACL.TransactionalID(who, id):
		reason = "the ACL file does not grant the transactional id"
	case pid >= 0 && !c.p.owners.mayUse(pid, who):
		reason = "another principal initialised the producer id"
	default:
		return 0
	}
	c.log.Warn().Str("principal", who).Str("txn", id).Int64("producer", pid).Str("reason", reason).
		Msgf("refusing %s: TRANSACTIONAL_ID_AUTHORIZATION_FAILED", op)
	return kerr.TransactionalIDAuthorizationFailed.Code
}

// mayDescribeTxn reports whether the connection's principal may see the
// transactional id (Kafka's DESCRIBE, implied by the WRITE the ACL file
// grants).
func (c *conn) mayDescribeTxn(id string) bool {
	return c.p.cfg.ACL.TransactionalID(c.principal(), id)
}

// authorizeIdempotent returns the code refusing this connection's
// idempotent writes with pid (-1: a new producer id), or 0: Kafka's
// CLUSTER_AUTHORIZATION_FAILED for a denied IDEMPOTENT_WRITE on the cluster.
func (c *conn) authorizeIdempotent(op string, pid int64) int16 {
	who := c.principal()
	reason := ""
	switch {
	case pid < 0 && !c.p.cfg.ACL.IdempotentWrite(who):
		reason = "the ACL file does not grant idempotent writes"
	case pid >= 0 && !c.p.owners.mayUse(pid, who):
		reason = "another principal initialised the producer id"
	default:
		return 0
	}
	c.log.Warn().Str("principal", who).Int64("producer", pid).Str("reason", reason).
		Msgf("refusing %s: CLUSTER_AUTHORIZATION_FAILED", op)
	return kerr.ClusterAuthorizationFailed.Code
}
