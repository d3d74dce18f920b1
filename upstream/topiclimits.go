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
					l.mu.Lock()
					if e, ok := l.known[topic]; ok {
						e.refreshing = false
						l.known[topic] = e
					}
					l.mu.Unlock()
				}
			}()
		}
		return e.lim, nil
	}
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
	if err != nil {
		return TopicLimits{}, fmt.Errorf("describe the configs of topic %q: %w", topic, err)
	}
	if len(resp.Resources) != 1 {
		return TopicLimits{}, fmt.Errorf("describe the configs of topic %q: %d resources answered", topic, len(resp.Resources))
	}
	r := resp.Resources[0]
	var lim TopicLimits
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return TopicLimits{}, fmt.Errorf("describe the configs of topic %q: %w", topic, err)
		}
		lim.Missing = true
	}
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
	if lim.Missing {
		return lim, nil // not kept: the topic may be created any moment
	}
	l := &c.limits
	l.mu.Lock()
	if l.known == nil {
		l.known = map[string]limitsEntry{}
	}
	l.known[topic] = limitsEntry{lim: lim, at: time.Now()}
	l.mu.Unlock()
	return lim, nil
}
