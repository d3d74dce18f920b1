// Package integration holds eosproxy's end-to-end tests: real franz-go clients
// through an in-process eosproxy in front of a 3-broker kfake cluster, and,
// when EOSPROXY_TEST_KAFKA names one, in front of a real Apache Kafka broker
// (started by integration/kafka/kafka.sh), with Kafka's own tools, kcat and
// librdkafka as clients too.
package integration
