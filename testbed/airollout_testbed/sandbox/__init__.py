"""`airollout sandbox`: a real etcd, kube-apiserver and Prometheus, and the FeatBit double, as local processes."""
