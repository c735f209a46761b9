package config

import _ "embed"

// Template is the commented configuration file `zerofs init` writes; the
// repository's config.example.toml is the same text (a test keeps them equal).
//
//go:embed template.toml
var Template []byte
