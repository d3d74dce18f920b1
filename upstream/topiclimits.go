package upstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TopicLimits are the settings of a topic that decide whether the backend
// takes a record batch: what Kafka checks on every append, and eosproxy
// must check itself for a transactional batch, which reaches the backend
// only at the commit, when a refusal can no longer be answered.
type TopicLimits struct {
	// Missing: the backend has no such topic.
	Missing bool
	// MaxMessageBytes is max.message.bytes: the largest batch, in bytes.
	MaxMessageBytes int
	// Compacted: cleanup.policy includes compact, so every record needs a
	// key.
	Compacted bool
}

// limitsMaxAge is how long a topic's limits are used before they are asked
// again; a newer answer is fetched in the background meanwhile. A batch
// checked against limits changed since is refused at its commit and
// retried there (logged), as it was before eosproxy checked.
const limitsMaxAge = 10 * time.Second

// limitsWait bounds the wait for a topic's first limits; past it the batch
// is taken unchecked, and so are the next ones until the next refresh.
const limitsWait = 2 * time.Second

type topicLimits struct {
	mu    sync.Mutex
	known map[string]limitsEntry
}

type limitsEntry struct {
	lim        TopicLimits
	at         time.Time
	refreshing bool
}

// TopicLimits returns topic's limits, asking the backend on the first call
// and then at most every limitsMaxAge (without waiting for the answer).
func (c *Client) TopicLimits(ctx context.Context, topic string) (TopicLimits, error) {
	l := &c.limits
	l.mu.Lock()
	e, ok := l.known[topic]
	stale := ok && time.Since(e.at) > limitsMaxAge && !e.refreshing
	if stale {
		e.refreshing = true
		l.known[topic] = e
	}
	l.mu.Unlock()
	if ok {
		if stale {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := c.fetchLimits(ctx, topic); err != nil {
					c.log.Debug().Err(err).Str("topic", topic).Msg("cannot refresh a topic's limits")
				}
			}()
		}
		return e.lim, nil
	}
	// A transactional batch is otherwise answered without the backend:
	// an unreachable one must not hold it up for long.
	ctx, cancel := context.WithTimeout(ctx, limitsWait)
	defer cancel()
	return c.fetchLimits(ctx, topic)
}

func (c *Client) fetchLimits(ctx context.Context, topic string) (TopicLimits, error) {
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType = kmsg.ConfigResourceTypeTopic
	res.ResourceName = topic
	res.ConfigNames = []string{"max.message.bytes", "cleanup.policy"}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, c.admin)
	if err == nil && len(resp.Resources) != 1 {
		err = fmt.Errorf("%d resources answered", len(resp.Resources))
	}
	var lim TopicLimits
	if err == nil {
		err = kerr.ErrorForCode(resp.Resources[0].ErrorCode)
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			lim.Missing, err = true, nil
		}
	}
	if err != nil {
		// Asked again at the next refresh, not for every batch: a backend
		// that does not let eosproxy describe the topic (an ACL) must not
		// cost a round trip per batch. Limits known from before are kept
		// meanwhile; without them, none.
		l := &c.limits
		l.mu.Lock()
		e := l.known[topic]
		l.mu.Unlock()
		c.keepLimits(topic, e.lim)
		return TopicLimits{}, fmt.Errorf("describe the configs of topic %q: %w", topic, err)
	}
	r := resp.Resources[0]
	for _, cfg := range r.Configs {
		if cfg.Value == nil {
			continue
		}
		switch cfg.Name {
		case "max.message.bytes":
			if n, err := strconv.Atoi(*cfg.Value); err == nil && n > 0 {
				lim.MaxMessageBytes = n
			}
		case "cleanup.policy":
			for _, p := range strings.Split(*cfg.Value, ",") {
				if strings.TrimSpace(p) == "compact" {
					lim.Compacted = true
				}
			}
		}
	}
	if lim.Missing { // not kept: the topic may be created any moment
		c.limits.mu.Lock()
		delete(c.limits.known, topic)
		c.limits.mu.Unlock()
		return lim, nil
	}
	c.keepLimits(topic, lim)
	return lim, nil
}

func (c *Client) keepLimits(topic string, lim TopicLimits) {
	l := &c.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.known == nil {
		l.known = map[string]limitsEntry{}
	}
	l.known[topic] = limitsEntry{lim: lim, at: time.Now()}
}
