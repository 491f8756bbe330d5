"""Model and numerics: the ResNets, the precision policies, torch.compile, and the CIFAR-10 data (reader, device-
resident and DataLoader loaders)."""
