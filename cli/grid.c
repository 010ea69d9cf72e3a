/* The PNG image grid of `advtrain attack`: one row per sample with the clean image, the
 * perturbation and the adversarial image, labels drawn with a built-in 3x5 bitmap font.
 * libpng writes it; the file appears atomically (temporary name, then rename). */
#include "attack_cli.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* 3x5 glyphs: five rows of three bits, the high bit on the left. */
typedef struct glyph {
    char ch;
    unsigned char rows[5];
} glyph;

static const glyph FONT[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'A', {2, 5, 7, 5, 5}}, {'B', {6, 5, 6, 5, 6}},
    {'C', {3, 4, 4, 4, 3}}, {'D', {6, 5, 5, 5, 6}}, {'E', {7, 4, 6, 4, 7}}, {'F', {7, 4, 6, 4, 4}},
    {'G', {3, 4, 5, 5, 3}}, {'H', {5, 5, 7, 5, 5}}, {'I', {7, 2, 2, 2, 7}}, {'J', {1, 1, 1, 5, 2}},
    {'K', {5, 5, 6, 5, 5}}, {'L', {4, 4, 4, 4, 7}}, {'M', {5, 7, 7, 5, 5}}, {'N', {6, 5, 5, 5, 5}},
    {'O', {2, 5, 5, 5, 2}}, {'P', {6, 5, 6, 4, 4}}, {'Q', {2, 5, 5, 6, 3}}, {'R', {6, 5, 6, 5, 5}},
    {'S', {3, 4, 2, 1, 6}}, {'T', {7, 2, 2, 2, 2}}, {'U', {5, 5, 5, 5, 7}}, {'V', {5, 5, 5, 5, 2}},
    {'W', {5, 5, 7, 7, 5}}, {'X', {5, 5, 2, 5, 5}}, {'Y', {5, 5, 2, 2, 2}}, {'Z', {7, 1, 2, 4, 7}},
    {'-', {0, 0, 7, 0, 0}}, {'.', {0, 0, 0, 0, 2}}, {'=', {0, 7, 0, 7, 0}}, {':', {0, 2, 0, 2, 0}},
    {'/', {1, 1, 2, 4, 4}}, {'%', {5, 1, 2, 4, 5}}, {'(', {2, 4, 4, 4, 2}}, {')', {2, 1, 1, 1, 2}},
    {'+', {0, 2, 7, 2, 0}}, {'_', {0, 0, 0, 0, 7}}, {' ', {0, 0, 0, 0, 0}},
};

static const glyph *find_glyph(char ch) {
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
    for (size_t i = 0; i < sizeof FONT / sizeof *FONT; i++)
        if (FONT[i].ch == ch) return &FONT[i];
    return &FONT[sizeof FONT / sizeof *FONT - 1]; /* unknown: blank */
}

typedef struct canvas {
    int width, height;
    unsigned char *rgb;
} canvas;

static void put(canvas *cv, int x, int y, const unsigned char col[3]) {
    if (x < 0 || y < 0 || x >= cv->width || y >= cv->height) return;
    memcpy(cv->rgb + 3 * ((size_t)y * cv->width + x), col, 3);
}

/* Draws text with its top-left corner at (x, y); each font pixel is scale x scale. */
static void draw_text(canvas *cv, int x, int y, int scale, const char *text, const unsigned char col[3]) {
    for (; *text; text++, x += 4 * scale) {
        const glyph *g = find_glyph(*text);
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 3; c++)
                if (g->rows[r] & (4 >> c))
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++) put(cv, x + c * scale + dx, y + r * scale + dy, col);
    }
}

static unsigned char to_byte(float v) {
    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    return (unsigned char)(v * 255.0f + 0.5f);
}

/* One image (C x H x W in [0,1], or a perturbation when pert_scale > 0) at (x0, y0), zoomed. */
static void draw_image(canvas *cv, int x0, int y0, int zoom, const float *img, const float *base, int c, int h,
                       int w, float pert_scale) {
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            unsigned char col[3];
            if (pert_scale > 0.0f && c == 1) {
                /* gray: red for brighter, blue for darker than the clean pixel */
                float d = (img[(size_t)r * w + q] - base[(size_t)r * w + q]) / pert_scale;
                d = d < -1.0f ? -1.0f : (d > 1.0f ? 1.0f : d);
                col[0] = to_byte(1.0f - (d < 0 ? -d : 0.0f));
                col[1] = to_byte(1.0f - (d < 0 ? -d : d));
                col[2] = to_byte(1.0f - (d > 0 ? d : 0.0f));
            } else {
                for (int k = 0; k < 3; k++) {
                    int ch = c == 1 ? 0 : (k < c ? k : 0);
                    size_t at = ((size_t)ch * h + r) * w + q;
                    float v = img[at];
                    if (pert_scale > 0.0f) v = 0.5f + 0.5f * (img[at] - base[at]) / pert_scale;
                    col[k] = to_byte(v);
                }
            }
            for (int dy = 0; dy < zoom; dy++)
                for (int dx = 0; dx < zoom; dx++) put(cv, x0 + q * zoom + dx, y0 + r * zoom + dy, col);
        }
}

static bool write_png(const char *path, const canvas *cv, char *err, size_t errcap) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errcap, "cannot create %s", tmp);
        return false;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = calloc((size_t)cv->height, sizeof *rows);
    if (!png || !info || !rows) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        free(rows);
        fclose(f);
        remove(tmp);
        snprintf(err, errcap, "out of memory writing %s", path);
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        fclose(f);
        remove(tmp);
        snprintf(err, errcap, "libpng failed writing %s", path);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)cv->width, (png_uint_32)cv->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < cv->height; y++) rows[y] = cv->rgb + 3 * (size_t)y * cv->width;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        remove(tmp);
        snprintf(err, errcap, "cannot write %s", path);
        return false;
    }
    return true;
}

bool grid_write_png(const char *path, const char *title, const float *x, const float *adv,
                    const int32_t *labels, const int32_t *clean_pred, const int32_t *adv_pred,
                    int n, int c, int h, int w, float scale_eps, const char *const *class_names,
                    char *err, size_t errcap) {
    const int zoom = h <= 32 && w <= 32 ? 4 : (h <= 64 ? 2 : 1);
    const int font = 2, line = 6 * font, pad = 8;
    int cell_w = w * zoom, cell_h = h * zoom;
    if (cell_w < 17 * 4 * font) cell_w = 17 * 4 * font; /* room for "LABEL 2 PULLOVER" */
    const int header = pad + 2 * line + pad, row_h = cell_h + 2 * line + pad;
    canvas cv;
    cv.width = pad + 3 * (cell_w + pad);
    cv.height = header + n * row_h;
    cv.rgb = malloc(3 * (size_t)cv.width * cv.height);
    if (!cv.rgb) {
        snprintf(err, errcap, "out of memory for a %dx%d image", cv.width, cv.height);
        return false;
    }
    memset(cv.rgb, 255, 3 * (size_t)cv.width * cv.height);
    static const unsigned char black[3] = {0, 0, 0}, green[3] = {0, 130, 0}, red[3] = {200, 0, 0},
                               gray[3] = {90, 90, 90};
    draw_text(&cv, pad, pad, font, title, black);
    const char *heads[3] = {"CLEAN", "PERTURBATION", "ADVERSARIAL"};
    for (int k = 0; k < 3; k++) draw_text(&cv, pad + k * (cell_w + pad), pad + line + 2, font, heads[k], gray);
    const size_t D = (size_t)c * h * w;
    for (int i = 0; i < n; i++) {
        int y0 = header + i * row_h;
        for (int k = 0; k < 3; k++) {
            int x0 = pad + k * (cell_w + pad) + (cell_w - w * zoom) / 2;
            const float *img = k == 0 ? x + i * D : adv + i * D;
            draw_image(&cv, x0, y0, zoom, img, x + i * D, c, h, w, k == 1 ? scale_eps : 0.0f);
        }
        char text[64];
        const char *yn = class_names ? class_names[labels[i]] : "";
        snprintf(text, sizeof text, "LABEL %d %s", labels[i], yn);
        draw_text(&cv, pad, y0 + cell_h + 3, font, text, black);
        snprintf(text, sizeof text, "PRED %d %s", clean_pred[i], class_names ? class_names[clean_pred[i]] : "");
        draw_text(&cv, pad, y0 + cell_h + 3 + line, font, text, clean_pred[i] == labels[i] ? green : red);
        float linf = 0.0f;
        for (size_t q = 0; q < D; q++) {
            float d = adv[i * D + q] - x[i * D + q];
            d = d < 0 ? -d : d;
            linf = d > linf ? d : linf;
        }
        snprintf(text, sizeof text, "MAX %.3f", (double)linf);
        draw_text(&cv, pad + cell_w + pad, y0 + cell_h + 3, font, text, gray);
        snprintf(text, sizeof text, "PRED %d %s", adv_pred[i], class_names ? class_names[adv_pred[i]] : "");
        draw_text(&cv, pad + 2 * (cell_w + pad), y0 + cell_h + 3, font, text, adv_pred[i] == labels[i] ? green : red);
    }
    bool ok = write_png(path, &cv, err, errcap);
    free(cv.rgb);
    return ok;
}
