"""Data: the synthetic ceramic-crack generator (§V-A's splits), COCO/VOC loaders for users' photographs, and the
§IV-B augmentation. Everything a model reads comes through here."""
