"""Training and evaluation: one engine, as in torchvision's detection references. §IV-B's training loop, §V-A's
VOC2007 AP and background check, and the diagnosis of where AP goes."""
