package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/eosproxy/eosproxy/store"
)

// Config is what a Client needs.
type Config struct {
	// Seeds are the backend's bootstrap brokers.
	Seeds       []string
	DialTimeout time.Duration
	// Dial opens every connection Dial and the pipes make; tests put fault
	// injection here. The admin client dials by itself.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// BrokerAddr is where broker id listens ("" if not known after asking
	// the backend): proxy's broker map, which clients' metadata feeds too.
	BrokerAddr func(id int32) (string, error)
	// DB holds the pairings of client producer ids with the backend's.
	DB *store.DB
	// ProducerIDExpiration is how long an unused pairing is kept.
	ProducerIDExpiration time.Duration
	// InUse lists the client producer ids with producer state; nil while
	// that is not known yet.
	InUse func() map[int64]struct{}
	// NoIdempotence: take the backend to have no idempotence
	// (--no-backend-idempotence).
	NoIdempotence bool
	// Groups is the client traffic's view of consumer groups, for
	// committing a decided transaction's offsets as a current member.
	Groups Groups
	Log    zerolog.Logger
	// TLS, if set, is used on every connection to the backend; SASL
	// authenticates eosproxy's own (auth.go).
	TLS  *tls.Config
	SASL sasl.Mechanism
	// Cut, for fault tests, partitions the admin client from the backend
	// too (Dial already goes through it).
	Cut *Cut
	// Fence, if set, is asked before every write of the admin client
	// (Dial's connections must go through it already: Fence.Dial).
	Fence Fence
}

// Client is eosproxy's own client to the backend: the admin client, the
// pipes, the backend's producer ids, and the dial of every connection to a
// broker, for eosproxy's own requests or to pair with a client's. The
// instance lease (Instance) keeps clients of its own: it starts before a
// Client, and outlives it on shutdown.
type Client struct {
	cfg   Config
	log   zerolog.Logger
	admin *kgo.Client // requests of eosproxy's own that need no order

	pipes   *pipes // pipelined connections for idempotent forwarding
	leaders *leaderCache
	hwMarks hwMarks // bounds of look-ups waiting for the high watermark
	ids     *upstreamIDs
	limits  topicLimits // topiclimits.go

	closeOnce sync.Once
}

// New makes the client; it connects lazily.
func New(cfg Config) (*Client, error) {
	var opts []kgo.Opt
	if cfg.Fence != nil {
		// The fenced dialer does TLS itself: kgo takes a Dialer or its
		// own TLS dialing, not both.
		var dial DialFunc = (&net.Dialer{}).DialContext
		if cfg.Cut != nil {
			dial = cfg.Cut.Dial
		}
		opts = append(KgoOpts(nil, cfg.SASL), cfg.Fence.kgoOpt(dial, cfg.TLS, cfg.DialTimeout))
	} else {
		opts = cfg.Cut.KgoOpts(KgoOpts(cfg.TLS, cfg.SASL))
	}
	opts = append(opts, kgo.SeedBrokers(cfg.Seeds...), kgo.DialTimeout(cfg.DialTimeout))
	admin, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream client: %w", err)
	}
	if cfg.Groups == nil {
		cfg.Groups = noGroups{}
	}
	c := &Client{cfg: cfg, log: cfg.Log, admin: admin, pipes: &pipes{}, leaders: &leaderCache{}}
	c.ids = newUpstreamIDs(cfg.DB, c.InitProducerID, c.servesInitProducerID, cfg.InUse, cfg.ProducerIDExpiration, c.log)
	return c, nil
}

// Start fills the pool of the backend's producer ids and starts expiring
// pairings, until Close.
func (c *Client) Start() {
	c.ids.refill()
	go c.ids.expireLoop()
}

// Close closes every connection of eosproxy's own; connections handed out
// by Dial are their holders'.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.admin.Close()
		c.pipes.close()
		c.ids.close()
	})
}

// Offline is for tests of package proxy that run without a backend: every
// request of eosproxy's own fails at once, and idempotent batches are
// cleared unpaired, as on a backend without idempotence.
func (c *Client) Offline() {
	c.admin.Close()
	c.ids.mode.Store(backendPlain)
	c.ids.retryAt.Store(time.Now().Add(24 * time.Hour).UnixMilli())
}

// Brokers asks the backend for its brokers.
func (c *Client) Brokers(ctx context.Context) ([]kmsg.MetadataResponseBroker, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	resp, err := req.RequestWith(ctx, c.admin)
	if err != nil {
		return nil, fmt.Errorf("upstream metadata: %w", err)
	}
	return resp.Brokers, nil
}

// Dial connects to broker id, or to the first seed that answers for id -1,
// for eosproxy's own use: authenticated with its credentials, if it has
// some.
func (c *Client) Dial(brokerID int32) (net.Conn, error) { return c.DialAs(brokerID, true) }

// DialAs is Dial, authenticating the connection with eosproxy's
// credentials only if own (a client's SASL exchange passes through the
// others).
func (c *Client) DialAs(brokerID int32, own bool) (net.Conn, error) {
	dial := func(addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
		defer cancel()
		conn, err := c.cfg.Dial(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.secure(ctx, conn, addr, own)
	}
	if brokerID < 0 {
		var errs []error
		for _, addr := range c.cfg.Seeds {
			up, err := dial(addr)
			if err == nil {
				return up, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	addr, err := c.cfg.BrokerAddr(brokerID)
	if addr == "" {
		return nil, fmt.Errorf("upstream address of broker %d unknown: %w", brokerID, err)
	}
	return dial(addr)
}

// Pair gives a new client producer id a producer id of the backend's; it
// fails while the backend has idempotence and none is at hand (the client
// is to retry).
func (c *Client) Pair(ctx context.Context, pid int64) error { return c.ids.pair(ctx, pid) }

// PairedID is the backend's producer id paired with client producer id
// pid, durable when it returns; ok false: forward without producer fields.
func (c *Client) PairedID(ctx context.Context, pid int64) (up int64, ok bool, err error) {
	return c.ids.lookup(ctx, pid)
}
