// Package deploy holds no code: this directory ships the operator's files
// (grafana/ dashboard, prometheus/ alert rules, kubernetes/ manifests), and
// the package's tests check them against the real relay and sink binaries.
package deploy
