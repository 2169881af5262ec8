/* Image data sets in torchvision's ImageFolder layout: root/<class>/<image>, one sub-folder per
 * class (ImageNet's train/n01440764/n01440764_10026.JPEG).
 *
 * Listing reads directories only, never an image: the class folders of root sorted bytewise
 * give the labels 0..C-1, and each class's files directly inside it whose names end in .jpg,
 * .jpeg or .png (any case) are taken in bytewise order, each once; hidden entries (a leading
 * dot, such as the ._IMG.jpg resource forks macOS leaves) are ignored, where torchvision would
 * list them. Which files are bad shows only when they are decoded (a zero-byte, truncated or
 * corrupt file, text under an image's name): whoever decodes them (the loader, the evaluation)
 * records each one in the set's skip list, and the listing records there what it leaves out
 * itself: files of other types, files outside every class folder, folders inside a class
 * folder. The library never prints; a program reports the list.
 *
 * Errors name the folder: a missing root (VR_ERR_NOT_FOUND), a root that is not a folder or
 * cannot be read (VR_ERR_IO), a root without class folders (VR_ERR_NOT_FOUND), a class folder
 * without one image file in it (VR_ERR_FORMAT: torchvision refuses it too; a class without
 * examples is a sign of a broken copy). */
#ifndef VICREG_IMAGE_FOLDER_H
#define VICREG_IMAGE_FOLDER_H

#include "vicreg/status.h"

/* A file left out of a data set and why (the message names the file). */
typedef struct vr_image_skip {
    char *path;
    char *reason;
} vr_image_skip;

typedef struct vr_image_folder {
    char *root;
    int n;
    char **paths;        /* (n) root/<class>/<file> */
    int *labels;         /* (n) in 0..nclasses-1 */
    unsigned char *bad;  /* (n) 1 once the file failed to decode (vr_image_folder_mark_bad) */
    int nclasses;
    char **class_names;  /* (nclasses) bytewise order */
    int nskipped;
    vr_image_skip *skipped; /* (nskipped) in the order found */
    int skipped_cap;
} vr_image_folder;

/* Lists root (see above). On failure the set is empty (nothing to free). */
vr_status vr_image_folder_list(const char *root, vr_image_folder *f);

/* Keeps `limit` samples (0 or limit >= n: all) spread evenly over the listing, sample
 * floor(i * n / limit) for i = 0..limit-1, so every class keeps its share where taking the
 * first `limit` would keep only the first classes. */
vr_status vr_image_folder_keep_spread(vr_image_folder *f, int limit);

/* Sample i failed to decode, for `reason` (the decoder's message, naming the file): marks it
 * bad and appends it to the skip list, once (a sample already bad is left as it is). Not
 * thread-safe: callers with threads lock. */
vr_status vr_image_folder_mark_bad(vr_image_folder *f, int i, const char *reason);

void vr_image_folder_free(vr_image_folder *f);

#endif
