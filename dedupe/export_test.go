package dedupe

// ScriptHashes are the SHA-1 digests of the package's scripts, for tests that
// check the server's script cache.
var ScriptHashes = []string{claimScript.Hash(), releaseScript.Hash()}
