package inference

// TestApp builds (once) and returns the path of testdata/testapp, for the
// external test package.
var TestApp = testapp
