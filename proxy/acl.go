package proxy

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// ACL says, per principal, which transactional ids it may use and whether
// it may write idempotently: what Kafka's authorizer decides with WRITE on
// a TRANSACTIONAL_ID resource and IDEMPOTENT_WRITE on the CLUSTER. A nil
// ACL allows everything (no --acl-file), as Kafka without an authorizer.
type ACL struct {
	rules map[string]aclRule
}

type aclRule struct {
	// TransactionalIDs are prefixes (Kafka's PREFIXED pattern); "*" is
	// every id.
	TransactionalIDs []string `yaml:"transactional_ids"`
	Idempotent       bool     `yaml:"idempotent"`
}

// LoadACL reads an --acl-file: a YAML mapping from principal ("User:alice",
// "User:CN=client,O=Example"; "User:*" for every principal not named) to
// its rule.
func LoadACL(file string) (*ACL, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ACL file: %w", err)
	}
	var rules map[string]aclRule
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("ACL file %s: %w", file, err)
	}
	for p := range rules {
		if !strings.Contains(p, ":") {
			return nil, fmt.Errorf("ACL file %s: principal %q is not TYPE:NAME (User:alice)", file, p)
		}
	}
	return &ACL{rules: rules}, nil
}

func (a *ACL) rule(principal string) (aclRule, bool) {
	if r, ok := a.rules[principal]; ok {
		return r, true
	}
	r, ok := a.rules["User:*"]
	return r, ok
}

// TransactionalID reports whether principal may use the transactional id.
func (a *ACL) TransactionalID(principal, id string) bool {
	if a == nil {
		return true
	}
	r, _ := a.rule(principal)
	for _, prefix := range r.TransactionalIDs {
		if prefix == "*" || strings.HasPrefix(id, prefix) {
			return true
		}
	}
	return false
}

// IdempotentWrite reports whether principal may get an idempotent producer
// id.
func (a *ACL) IdempotentWrite(principal string) bool {
	if a == nil {
		return true
	}
	r, _ := a.rule(principal)
	return r.Idempotent
}
